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
# The letters Crockford base32 leaves out, read as the digits they look like.
_LOOK_ALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_invoice_number() -> str:
    return NUMBER_PREFIX + "".join(secrets.choice(CROCKFORD) for _ in range(NUMBER_LENGTH))


def new_public_token() -> str:
    return secrets.token_urlsafe(24)


def number_as_meant(text: str) -> str:
    """An invoice number as a person typed or read it: upper case, and after `INV` the letters
    no number has read as the digits they look like (O as 0, I and L as 1), so `invoc4ft6k`
    finds INV0C4FT6K. Chat, the REST API and the CLI all look numbers up through this."""
    number = text.strip().upper()
    if number.startswith(NUMBER_PREFIX):
        return NUMBER_PREFIX + number[len(NUMBER_PREFIX) :].translate(_LOOK_ALIKES)
    return number
