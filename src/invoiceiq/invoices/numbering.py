"""Invoice numbers and public tokens.

The number is `INV` + 7 Crockford base32 characters: letters and digits only, 10 characters, so
it is a valid Daraja AccountReference (≤ 12) and easy to read aloud (no I, L, O or U). It is
public, so it opens nothing: the link carries a separate token of 192 random bits.
"""

from __future__ import annotations

import secrets

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
NUMBER_PREFIX = "INV"
NUMBER_LENGTH = 7


def new_invoice_number() -> str:
    return NUMBER_PREFIX + "".join(secrets.choice(CROCKFORD) for _ in range(NUMBER_LENGTH))


def new_public_token() -> str:
    return secrets.token_urlsafe(24)
