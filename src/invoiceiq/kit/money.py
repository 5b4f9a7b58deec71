"""Money as integer cents (KES): parse amounts people type, format them, and work out VAT."""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "AmountError",
    "format_kes",
    "looks_like_amount",
    "parse_amount",
    "split_amount",
    "to_cents",
    "to_shillings",
    "vat_cents",
]

CENTS_PER_SHILLING: Final = 100
# Nothing a person types as an amount is this long; refusing early bounds the regex work.
_MAX_INPUT_LENGTH: Final = 40

_CURRENCY = r"(?:kshs|ksh|kes|shs|sh)\.?"
# The loose shape of an amount: optional sign and currency word, digits mixed with `,` and `.`,
# and the East African `/=` or `/-` suffix. What the digits mean is checked afterwards, so a
# badly written amount is still found in a sentence and gets a precise message.
_AMOUNT_FORM = re.compile(
    rf"(?P<sign>[-−]?)(?:{_CURRENCY}\s*)?(?P<sign2>[-−]?)"
    rf"(?P<number>[0-9.,]*[0-9][0-9.,]*)(?:\s*(?:/[=-]|{_CURRENCY}))?",
    re.IGNORECASE,
)
_CURRENCY_WORD = re.compile(_CURRENCY, re.IGNORECASE)
# What may follow the number as a word of its own: `1500 KES`, `1500 /=`.
_SUFFIX_WORD = re.compile(rf"/[=-]|{_CURRENCY}", re.IGNORECASE)
_GROUPED = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+")
_PLAIN = re.compile(r"[0-9]+")
_CENTS = re.compile(r"[0-9]{1,2}")

MSG_NOT_A_NUMBER: Final = (
    "That doesn't look like an amount. Type it in shillings, like 1500 or KES 1,500."
)
MSG_NOT_POSITIVE: Final = "The amount must be at least KSh 1. Type it like 1500."
MSG_NOT_WHOLE: Final = (
    "M-PESA takes whole shillings only. Type the amount without cents, like 1500."
)
MSG_SEPARATORS: Final = (
    "Put commas between thousands, like 1,500 or 150,000, or type just the digits, like 1500."
)


class AmountError(ValueError):
    """An amount we cannot use; `message` is safe to send to the person who typed it."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


def parse_amount(text: str, *, max_amount: int) -> int:
    """Parse whole shillings typed by a person (`1,500`, `KES 1500`, `1500/=`) and return cents.

    `max_amount` is in shillings. A zero fraction (`1500.00`, `1500.0`) is accepted as 1500,
    since it says exactly that; any other fraction is refused, because M-PESA charges whole
    shillings. Three digits after a dot (`1.500`) are refused as a misplaced separator rather
    than guessed at.
    """
    if max_amount < 1:
        raise ValueError("max_amount must be at least 1 shilling")
    negative, whole, fraction = _split_number(text)
    if negative:
        raise AmountError(MSG_NOT_POSITIVE, reason="not_positive")
    if fraction.strip("0"):
        raise AmountError(MSG_NOT_WHOLE, reason="not_whole")
    shillings = int(whole)
    if shillings < 1:
        raise AmountError(MSG_NOT_POSITIVE, reason="not_positive")
    if shillings > max_amount:
        raise AmountError(_too_large_message(max_amount), reason="too_large")
    return to_cents(shillings)


def _too_large_message(max_amount: int) -> str:
    most = format_kes(to_cents(max_amount))
    return f"M-PESA takes at most {most} in one payment. Type an amount up to {most}."


def _split_number(text: str) -> tuple[bool, str, str]:
    """Return (negative, whole digits, fraction digits), or raise for a malformed amount."""
    match = _match_form(text)
    if match is None:
        raise AmountError(MSG_NOT_A_NUMBER, reason="not_a_number")
    negative = bool(match["sign"] or match["sign2"])
    # A trailing comma or full stop is sentence punctuation ("I paid 1500."), not part of it.
    number = match["number"].rstrip(".,")
    whole, dot, fraction = number.partition(".")
    if dot and not _CENTS.fullmatch(fraction):
        raise AmountError(MSG_SEPARATORS, reason="separators")
    if "," in whole:
        if not _GROUPED.fullmatch(whole):
            raise AmountError(MSG_SEPARATORS, reason="separators")
        whole = whole.replace(",", "")
    if not whole:
        whole = "0"
    if not _PLAIN.fullmatch(whole):
        raise AmountError(MSG_SEPARATORS, reason="separators")
    return negative, whole, fraction


def _match_form(text: str) -> re.Match[str] | None:
    stripped = text.strip()
    if not stripped or len(stripped) > _MAX_INPUT_LENGTH:
        return None
    return _AMOUNT_FORM.fullmatch(stripped)


def looks_like_amount(token: str) -> bool:
    """True when `token` (or a `KES 1500` pair) has the shape of an amount, in range or not."""
    return _match_form(token) is not None


def split_amount(tokens: list[str]) -> tuple[int, int] | None:
    """Find the first amount in `tokens`; return its (start, end) slice bounds, end exclusive.

    A currency word followed by a number (`KES`, `1,500`) is one amount spanning two tokens,
    and so is a number followed by one (`1500`, `KES`) or by `/=`. Join `tokens[start:end]`
    with a space and pass it to `parse_amount`.
    """
    for index, token in enumerate(tokens):
        pair = " ".join(tokens[index : index + 2])
        if _CURRENCY_WORD.fullmatch(token) and index + 1 < len(tokens) and looks_like_amount(pair):
            return index, index + 2
        if looks_like_amount(token):
            after = tokens[index + 1] if index + 1 < len(tokens) else ""
            if _SUFFIX_WORD.fullmatch(after) and looks_like_amount(pair):
                return index, index + 2
            return index, index + 1
    return None


def vat_cents(amount_cents: int, vat_percent: int) -> int:
    """The VAT included in a VAT-inclusive amount, rounded down to the cent."""
    if vat_percent < 0:
        raise ValueError("vat_percent must not be negative")
    return amount_cents * vat_percent // (100 + vat_percent)


def format_kes(cents: int) -> str:
    """`150000` → `KSh 1,500`; `150050` → `KSh 1,500.50`."""
    sign = "-" if cents < 0 else ""
    shillings, rest = divmod(abs(cents), CENTS_PER_SHILLING)
    text = f"{sign}KSh {shillings:,}"
    return f"{text}.{rest:02d}" if rest else text


def to_cents(shillings: int) -> int:
    return shillings * CENTS_PER_SHILLING


def to_shillings(cents: int) -> int:
    """Whole shillings for `cents`; refuses an amount with cents rather than rounding it away."""
    shillings, rest = divmod(cents, CENTS_PER_SHILLING)
    if rest:
        raise ValueError(f"{cents} cents is not a whole number of shillings")
    return shillings
