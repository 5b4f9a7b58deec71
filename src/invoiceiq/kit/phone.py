"""Kenyan mobile numbers: normalise what people type to E.164 digits, and mask them for display."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

__all__ = [
    "PHONE_PATTERN",
    "PhoneError",
    "as_typed",
    "is_msisdn",
    "mask_msisdn",
    "mask_phones_in_text",
    "normalize_msisdn",
]

_REGION: Final = "KE"
_KENYA_CODE: Final = 254
_NATIONAL_LENGTH: Final = 9
# Safaricom, Airtel and Telkom mobiles (the only numbers M-PESA can prompt) are 07… and 01….
_MOBILE_LEADS: Final = ("7", "1")
_MOBILE_TYPES: Final = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
# Longer than any number written with separators; refusing early keeps the parser cheap.
_MAX_RAW_LENGTH: Final = 64

# Only what people put around digits. phonenumbers would otherwise read letters as a keypad
# (0712abc678 becomes a valid number) and accept extensions such as "ext. 12".
_ALLOWED = re.compile(r"\(?\+?[0-9 ()\-.]+")
_LETTER = re.compile(r"[^\W\d_]")

_EXAMPLE: Final = "Type it like 0712345678 or +254712345678."
MSG_EMPTY: Final = f"Please type a phone number. {_EXAMPLE}"
MSG_LETTERS: Final = f"A phone number has only digits. {_EXAMPLE}"
MSG_TOO_SHORT: Final = f"That phone number is too short: a Kenyan mobile has 10 digits. {_EXAMPLE}"
MSG_TOO_LONG: Final = f"That phone number is too long: a Kenyan mobile has 10 digits. {_EXAMPLE}"
MSG_NOT_KENYAN: Final = f"Only Kenyan mobile numbers can pay by M-PESA. {_EXAMPLE}"
MSG_LANDLINE: Final = f"That looks like a landline. M-PESA needs a mobile number. {_EXAMPLE}"
MSG_NOT_MOBILE: Final = (
    f"That isn't a Kenyan mobile number: M-PESA numbers start with 07 or 01. {_EXAMPLE}"
)
MSG_INVALID: Final = f"That doesn't look like a Kenyan mobile number. {_EXAMPLE}"


class PhoneError(ValueError):
    """A number we cannot use; `message` is safe to send to the person who typed it."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


def normalize_msisdn(raw: str) -> str:
    """Return a Kenyan mobile as 12 E.164 digits without `+` (`2547…`/`2541…`), or raise."""
    text = as_typed(raw)
    if not text:
        raise PhoneError(MSG_EMPTY, reason="empty")
    if len(text) > _MAX_RAW_LENGTH:
        raise PhoneError(MSG_TOO_LONG, reason="too_long")
    if not _ALLOWED.fullmatch(text):
        if _LETTER.search(text):
            raise PhoneError(MSG_LETTERS, reason="letters")
        raise PhoneError(MSG_INVALID, reason="invalid")
    number = _parse(text)
    if number.country_code != _KENYA_CODE:
        raise PhoneError(MSG_NOT_KENYAN, reason="not_kenyan")
    national = str(number.national_number)
    if not phonenumbers.is_valid_number(number):
        _raise_for_invalid(text, national)
    number_type = phonenumbers.number_type(number)
    if number_type == PhoneNumberType.FIXED_LINE:
        raise PhoneError(MSG_LANDLINE, reason="landline")
    if number_type not in _MOBILE_TYPES or not national.startswith(_MOBILE_LEADS):
        raise PhoneError(MSG_NOT_MOBILE, reason="not_mobile")
    return f"{_KENYA_CODE}{national}"


def as_typed(raw: str) -> str:
    """What the person typed, without what copying adds: invisible format characters (a
    phone app wraps a copied number in direction marks) and other kinds of space (no-break)."""
    kept = (
        " " if unicodedata.category(char) == "Zs" else char
        for char in raw
        if unicodedata.category(char) != "Cf"
    )
    return "".join(kept).strip()


def is_msisdn(raw: str) -> bool:
    try:
        normalize_msisdn(raw)
    except PhoneError:
        return False
    return True


def _parse(text: str) -> phonenumbers.PhoneNumber:
    try:
        return phonenumbers.parse(text, _REGION)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            raise PhoneError(MSG_NOT_KENYAN, reason="not_kenyan") from None
        if exc.error_type in (
            NumberParseException.TOO_SHORT_NSN,
            NumberParseException.TOO_SHORT_AFTER_IDD,
        ):
            raise PhoneError(MSG_TOO_SHORT, reason="too_short") from None
        if exc.error_type == NumberParseException.TOO_LONG:
            raise PhoneError(MSG_TOO_LONG, reason="too_long") from None
        raise PhoneError(MSG_INVALID, reason="invalid") from None


def _raise_for_invalid(text: str, national: str) -> None:
    # 255712345678 or 00255… typed without a `+` is read as a (too long) Kenyan number; saying
    # "not Kenyan" tells the person what is actually wrong.
    if _is_foreign_without_plus(text):
        raise PhoneError(MSG_NOT_KENYAN, reason="not_kenyan")
    if len(national) < _NATIONAL_LENGTH:
        raise PhoneError(MSG_TOO_SHORT, reason="too_short")
    if len(national) > _NATIONAL_LENGTH:
        raise PhoneError(MSG_TOO_LONG, reason="too_long")
    raise PhoneError(MSG_NOT_MOBILE, reason="not_mobile")


def _is_foreign_without_plus(text: str) -> bool:
    digits = _digits(text)
    if text.startswith("+") or (digits.startswith("0") and not digits.startswith("00")):
        return False
    try:
        number = phonenumbers.parse("+" + digits.removeprefix("00"), None)
    except NumberParseException:
        return False
    return number.country_code != _KENYA_CODE and phonenumbers.is_valid_number(number)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


_BULLET: Final = "•"
_KEEP_HEAD: Final = 4
_KEEP_TAIL: Final = 3
# Below this, keeping 4 + 3 digits would reveal nearly the whole string.
_FULL_MASK_MIN: Final = 10
_TAIL_ONLY_MIN: Final = 6


def mask_msisdn(msisdn: str) -> str:
    """`254712345678` → `2547•••••678`; shorter strings keep less, down to nothing."""
    length = len(msisdn)
    if length >= _FULL_MASK_MIN:
        hidden = length - _KEEP_HEAD - _KEEP_TAIL
        return msisdn[:_KEEP_HEAD] + _BULLET * hidden + msisdn[-_KEEP_TAIL:]
    if length >= _TAIL_ONLY_MIN:
        return _BULLET * (length - 2) + msisdn[-2:]
    return _BULLET * length


# 9 to 15 digits (E.164's maximum), optionally after `+`, with up to three spaces or dashes
# anywhere between digits, since people group numbers every which way. A letter, digit, `_`, `+`
# or `-` just before, or a word character (or a dash and one) just after, means the digits are
# part of an id (hex UUIDs, ws_CO_… request ids) and are left alone. ASCII only: \d would
# otherwise also match other scripts' digits.
_PHONE = r"(?<![\w+\-])\+?\d(?:[ \-]{0,3}\d){8,14}(?!\w|-\w)"
PHONE_PATTERN: Final = re.compile(_PHONE, re.ASCII)
# Log lines start with a timestamp whose digits would otherwise read as a phone number
# ("2024-11-26 12:51" has ten); matching it first keeps it whole.
_MASKABLE = re.compile(rf"(?P<timestamp>\d{{4}}-\d\d-\d\d[T ]\d\d:\d\d)|{_PHONE}", re.ASCII)


def _mask_match(match: re.Match[str]) -> str:
    found = match.group()
    if match["timestamp"]:
        return found
    masked = mask_msisdn(_digits(found))
    return "+" + masked if found.startswith("+") else masked


def mask_phones_in_text(text: str) -> str:
    """Replace every phone-like digit run in `text` with its masked form (used on log lines)."""
    return _MASKABLE.sub(_mask_match, text)
