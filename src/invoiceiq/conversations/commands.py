"""Merchant commands (DESIGN §5): parse what a merchant typed into a command, or a precise error.

Parsing is pure: it checks shapes (phone, amount, description) and leaves lookups (a saved
customer name, an invoice number) to the service.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Literal

from invoiceiq.invoices.numbering import number_as_meant
from invoiceiq.kit.money import AmountError, parse_amount, split_amount
from invoiceiq.kit.phone import PhoneError, as_typed, is_msisdn, normalize_msisdn
from invoiceiq.kit.text import one_line, unshowable, visible_length

DESCRIPTION_MIN, DESCRIPTION_MAX = 3, 120
BUSINESS_NAME_MIN, BUSINESS_NAME_MAX = 2, 60
CUSTOMER_NAME_MAX = 80
ONE_LINE_EXAMPLE = "invoice 0712345678 1500 Logo design"
# A recipient token made only of digits and phone punctuation is a phone number, never a name.
_PHONE_LIKE = re.compile(r"^\(?\+?[0-9][0-9()\-.]*$")
# An amount of one to three digits (after a currency word, before a stray comma) followed by a
# group of three ("500", "500/=", "500.00"): thousands split by a space.
_SHORT_AMOUNT = re.compile(r"(?:KES|KSHS?|SHS?)?\.?(?P<digits>[0-9]{1,3}),?", re.IGNORECASE)
_THOUSANDS_GROUP = re.compile(r"[0-9]{3}(?![0-9])")
_INVOICE_NUMBER = re.compile(r"^INV[0-9A-Z]{7}$")
_NUMBER_PUNCTUATION = ".,;:!?()[]\"'*_#"
# `0712 345 678`, `+254 712 345 678`, `07 12 34 56 78`: the groups a number is typed in.
_MAX_PHONE_GROUPS = 5


class CommandError(ValueError):
    """A command we recognised but cannot use; `message` says what to type instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class StartGuided:
    pass


@dataclass(frozen=True)
class OneLineInvoice:
    amount_cents: int
    description: str
    phone: str | None = None  # E.164 digits when the recipient was a number
    saved_name: str | None = None  # otherwise the words naming a saved customer


@dataclass(frozen=True)
class NameReading:
    """One way to read `invoice <words> <amount> <description>`: the words before one of the
    amount-like words as the saved name, and the invoice that gives, or what is wrong with it."""

    name: str
    invoice: OneLineInvoice | None = None
    error: str | None = None


@dataclass(frozen=True)
class SavedNameInvoice:
    """`invoice Mama 2 1500 Rice`: the saved name may end at either amount-like word ("Mama"
    for KSh 2, or "Mama 2" for KSh 1,500). Its readings, shortest name first: the service keeps
    the one whose name the merchant saved, and asks when more than one is."""

    readings: tuple[NameReading, ...]


@dataclass(frozen=True)
class InvoiceAction:
    action: Literal["status", "cancel", "remind"]
    number: str


@dataclass(frozen=True)
class Unpaid:
    pass


@dataclass(frozen=True)
class SetName:
    name: str


@dataclass(frozen=True)
class SetVat:
    enabled: bool


@dataclass(frozen=True)
class Unknown:
    pass


Command = (
    Help
    | StartGuided
    | OneLineInvoice
    | SavedNameInvoice
    | InvoiceAction
    | Unpaid
    | SetName
    | SetVat
    | Unknown
)
# A name is read up to at most this many amount-like words (a description full of numbers
# would otherwise make a reading of each).
MAX_NAME_READINGS = 4


def parse_command(text: str, *, max_amount: int) -> Command:
    """The command in `text`; CommandError when it is recognised but malformed."""
    tokens = text.split()
    if not tokens:
        return Unknown()
    verb, rest = first_word(text), tokens[1:]
    if verb in {"help", "menu", "?"} and not rest:
        return Help()
    if verb == "invoice":
        return parse_invoice(rest, max_amount=max_amount) if rest else StartGuided()
    if verb in {"status", "cancel", "remind"} and rest:
        return InvoiceAction(verb, parse_invoice_number(rest))  # type: ignore[arg-type]
    if verb == "cancel":  # (a draft being written is cancelled before commands are read)
        raise CommandError(
            "There is no draft invoice to cancel. To cancel an invoice, type cancel followed "
            "by its number, like: cancel INV7K3QX9A"
        )
    if verb in {"status", "remind"}:
        raise CommandError(f"Type {verb} followed by the invoice number, like: {verb} INV7K3QX9A")
    if verb == "unpaid" and not rest:
        return Unpaid()
    if verb == "name":
        return SetName(parse_business_name(" ".join(rest)))
    switch = rest[0].lower().strip(_PUNCTUATION) if len(rest) == 1 else ""
    if verb == "vat" and switch in {"on", "off"}:
        return SetVat(switch == "on")
    if verb == "vat":
        raise CommandError("Type vat on if your prices include VAT, or vat off if they don't.")
    return Unknown()


def parse_invoice(tokens: list[str], *, max_amount: int) -> OneLineInvoice | SavedNameInvoice:
    """`<phone|saved name> <amount> <description>`; the phone is one token (a copied one
    may come wrapped in invisible direction marks)."""
    tokens = [_recipient(tokens[0]), *tokens[1:]]
    if _PHONE_LIKE.match(tokens[0]):
        phone = _one_token_phone(tokens)
        after = tokens[1:]
        span = split_amount(after)
        if span is None or span[0] != 0:
            if after and any(char.isnumeric() for char in after[0]):
                _amount(after[0], max_amount=max_amount)  # what is wrong with it, if anything
            raise CommandError(f"Put the amount after the phone number, like: {ONE_LINE_EXAMPLE}")
        amount_cents, description = _amount_and_description(after, span[1], max_amount=max_amount)
        return OneLineInvoice(amount_cents, description, phone=phone)
    span = split_amount(tokens)
    if span is None or span[0] == 0:
        raise CommandError(
            "Type the customer's phone (or saved name), the amount and what it is for, "
            f"like: {ONE_LINE_EXAMPLE}"
        )
    misplaced = _phone_at(tokens, span[0])
    if misplaced is not None:
        # `invoice to 0766000006 1500 Logo`: the first number is the phone, not the amount
        # (which would be refused as too large, or taken for the wrong one).
        raise CommandError(
            "Put the customer's phone number right after invoice, then the amount and what "
            f"it is for, like: invoice {misplaced} 1500 Logo design"
        )
    readings = _name_readings(tokens, max_amount=max_amount)
    if len(readings) > 1:
        return SavedNameInvoice(tuple(readings))
    only = readings[0]
    if only.invoice is None:
        raise CommandError(only.error or "")
    return only.invoice


def _recipient(token: str) -> str:
    """The first word as meant: without what copying adds (`as_typed`), and a phone number
    without the punctuation typed after it (`0712345678:`, `0712345678,`)."""
    token = as_typed(token)
    bare = token.rstrip(_PUNCTUATION)
    return bare if bare and _PHONE_LIKE.match(bare) else token


def _phone_at(tokens: list[str], start: int) -> str | None:
    """The phone number written at `tokens[start]`, as one word or in groups (`0766 000 006`),
    without its spaces; None when there is none."""
    for end in range(start + 1, min(len(tokens), start + _MAX_PHONE_GROUPS) + 1):
        joined = "".join(tokens[start:end]).rstrip(_PUNCTUATION)
        if not _PHONE_LIKE.match(joined):
            return None
        if is_msisdn(joined):
            return joined
    return None


def _one_token_phone(tokens: list[str]) -> str:
    """`tokens[0]` as a phone number; when it is a number typed with spaces (`0712 345 678`),
    the error says to type it without them, with the command as it should read."""
    try:
        return parse_phone(tokens[0])
    except CommandError as error:
        for end in range(2, min(len(tokens), _MAX_PHONE_GROUPS) + 1):
            joined = "".join(tokens[:end])
            if not _PHONE_LIKE.match(joined):
                break
            if is_msisdn(joined):
                fixed = " ".join(["invoice", joined, *tokens[end:]])
                raise CommandError(f"Type the phone number without spaces, like: {fixed}") from None
        raise error from None


def _name_readings(tokens: list[str], *, max_amount: int) -> list[NameReading]:
    """Each amount-like word after the first word may be where the saved name ends."""
    readings: list[NameReading] = []
    start = 1
    while len(readings) < MAX_NAME_READINGS:
        span = split_amount(tokens[start:])
        if span is None:
            break
        begin, end = start + span[0], start + span[1]
        name = " ".join(tokens[:begin])
        try:
            amount_cents, description = _amount_and_description(
                tokens[begin:], end - begin, max_amount=max_amount
            )
        except CommandError as error:
            readings.append(NameReading(name, error=error.message))
        else:
            invoice = OneLineInvoice(amount_cents, description, saved_name=name)
            readings.append(NameReading(name, invoice=invoice))
        start = end
    return readings


def _amount_and_description(after: list[str], end: int, *, max_amount: int) -> tuple[int, str]:
    """`after[:end]` is the amount, the rest the description."""
    _refuse_split_thousands(after[end - 1], after[end:], max_amount=max_amount)
    amount_cents = _amount(" ".join(after[:end]), max_amount=max_amount)
    return amount_cents, parse_description(" ".join(after[end:]))


def _refuse_split_thousands(amount: str, rest: list[str], *, max_amount: int) -> None:
    """`1 500 Logo design` reads as KSh 1 for "500 Logo design", but is meant as 1,500: a one-line
    invoice goes out at once, so ask rather than send the customer the wrong amount. Asked only
    when the joined amount could be one (within the maximum)."""
    short = _SHORT_AMOUNT.fullmatch(amount)
    group = _THOUSANDS_GROUP.match(rest[0]) if rest else None
    if short is None or group is None:
        return
    shillings, thousands = short["digits"], group.group()
    if int(shillings + thousands) > max_amount:
        return
    raise CommandError(
        f"Is that KSh {shillings} or KSh {shillings},{thousands}? Type the amount without "
        f"spaces and start what it is for with a word, like: {ONE_LINE_EXAMPLE}"
    )


def parse_phone(text: str) -> str:
    try:
        return normalize_msisdn(text)
    except PhoneError as error:
        raise CommandError(error.message) from None


def _amount(text: str, *, max_amount: int) -> int:
    try:
        return parse_amount(text, max_amount=max_amount)
    except AmountError as error:
        raise CommandError(error.message) from None


def parse_amount_answer(text: str, *, max_amount: int) -> int:
    return _amount(text.strip(), max_amount=max_amount)


def parse_description(text: str) -> str:
    description = one_line(text)
    if not visible_length(description):
        raise CommandError(
            f"Add what the invoice is for after the amount, like: {ONE_LINE_EXAMPLE}"
        )
    _refuse_unshowable(description)
    if visible_length(description) < DESCRIPTION_MIN:
        raise CommandError(
            f"The description is too short: use at least {DESCRIPTION_MIN} characters, "
            "like Logo design."
        )
    if len(description) > DESCRIPTION_MAX:
        raise CommandError(
            f"The description is too long ({len(description)} characters): keep it to "
            f"{DESCRIPTION_MAX} or fewer."
        )
    return description


def parse_business_name(text: str) -> str:
    name = one_line(text)
    if visible_length(name) < BUSINESS_NAME_MIN:
        raise CommandError("Type name followed by your business name, like: name Wanjiku Designs")
    _refuse_unshowable(name)
    if len(name) > BUSINESS_NAME_MAX:
        raise CommandError(
            f"That business name is too long: keep it to {BUSINESS_NAME_MAX} characters or fewer."
        )
    return name


_PUNCTUATION = string.punctuation + "¡¿“”‘’«»…"
# What surrounds the letters of a word: punctuation, an emoji, invisible marks.
_LETTERS_AROUND = re.compile(r"^[\W_]+|[\W_]+$")
# Courtesy around a one-word answer ("cancel please", "skip tafadhali").
_COURTESY = frozenset({"please", "pls", "plz", "tafadhali", "asante", "thanks"})


def bare_words(lowered: str) -> list[str]:
    """The words of a message, without the punctuation around them."""
    words = (w.strip(_PUNCTUATION) for w in lowered.split())
    return [w for w in words if w]


def first_word(text: str) -> str:
    """The message's first word as meant, lowercased, however it is spaced and punctuated
    (`Unpaid.`, `invoice!`, `Name:`; `?` alone stays `?`); "" for a blank message."""
    words = text.split(maxsplit=1)
    if not words:
        return ""
    word = words[0].lower()
    return word.strip(_PUNCTUATION) or word


def keyword(text: str) -> str:
    """A one-word answer as meant: `Cancel.`, `cancel!`, `Cancel 🙏`, `cancel🙏` and `cancel
    please` are all "cancel"; "" when the message is more than one word (or none)."""
    words = (_LETTERS_AROUND.sub("", word) for word in text.lower().split())
    kept = [word for word in words if word and word not in _COURTESY]
    return kept[0] if len(kept) == 1 else ""


def _refuse_unshowable(text: str) -> None:
    """Text others will read (on the invoice, its page, the receipts) is shown as typed."""
    problem = unshowable(text)
    if problem is not None:
        raise CommandError(problem)


def parse_customer_name(text: str) -> str:
    name = one_line(text)
    if not visible_length(name):
        raise CommandError("Type the customer's name, or skip.")
    if _NUMBER_AS_NAME.fullmatch(name):
        # Saved as the name, it would be the only full number the merchant sees (the real
        # one is masked): an invoice "to 0788 123 456" that went to another phone.
        raise CommandError(
            "That looks like a phone number, not a name. Type the customer's name, or skip. "
            "To change the phone number, type back."
        )
    if len(name) > CUSTOMER_NAME_MAX:
        raise CommandError(
            f"Keep the name to {CUSTOMER_NAME_MAX} characters or fewer, or type skip."
        )
    _refuse_unshowable(name)
    return name


# Digits as phone numbers are written (spaces, dashes, dots, brackets, a leading +), 7 or more.
_NUMBER_AS_NAME = re.compile(r"\+?(?:[\s\-.()]*\d){7,}[\s\-.()]*")


def parse_invoice_number(tokens: list[str]) -> str:
    """As typed, forgiving what a person does: punctuation around it (`INV7K3QX9A.`), and the
    letters Crockford base32 leaves out read as the digits they look like (O as 0, I and L
    as 1), so `INV7K3QXOA` finds INV7K3QX0A."""
    number = number_as_meant("".join(tokens).strip(_NUMBER_PUNCTUATION))
    if not _INVOICE_NUMBER.match(number):
        raise CommandError("Type the invoice number as it appears on the invoice, like INV7K3QX9A.")
    return number
