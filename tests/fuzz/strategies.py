"""Hypothesis strategies for what strangers can send us: typed text, JSON, provider bodies.

Fully random input mostly dies at the first check, so alongside it come "near-valid" inputs: the
shapes WhatsApp and Daraja really send, with any field swapped for junk of any JSON type, left
out, or given an extreme value. That reaches the code behind the first check.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import strategies as st


def examples(default: int) -> int:
    """Examples per property: `default` in `make test`, more with FUZZ_EXAMPLES=N."""
    return int(os.environ.get("FUZZ_EXAMPLES", default))


# Characters that break naive code: NUL, surrogates, other scripts' digits, RTL marks, emoji.
_AWKWARD = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "١٢٣", "٫", "\u202e", "\ufeff", "💸", "\n", "\t", "−", "/="]
)
texts = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.text(max_size=8), _AWKWARD), max_size=8).map("".join),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False).map(float),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=12,
)


def maybe(valid: st.SearchStrategy[Any], junk_one_in: int) -> st.SearchStrategy[Any]:
    """Mostly the valid value, sometimes (about one time in `junk_one_in`, though hypothesis
    favours edges) any JSON value instead; never junk when `junk_one_in` is 0."""
    if junk_one_in == 0:
        return valid
    return st.integers(min_value=1, max_value=junk_one_in).flatmap(
        lambda n: json_values if n == 1 else valid
    )


# Digits that look like numbers: Kenyan mobiles, other countries', too short, far too long.
phone_digits = st.one_of(
    st.from_regex(r"2547[0-9]{8}", fullmatch=True),
    st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    # Past Python's 4,300-digit limit for int(): code that converts must not crash.
    st.integers(min_value=4000, max_value=4400).map(lambda n: "7" * n),
)
stamps = st.one_of(
    st.integers(min_value=0, max_value=2**34).map(str),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.from_regex(r"[0-9]{1,30}", fullmatch=True),
)
ids = st.one_of(st.text(min_size=1, max_size=80), st.text(min_size=120, max_size=300))
_item_names = st.sampled_from(
    ["Amount", "MpesaReceiptNumber", "Balance", "TransactionDate", "PhoneNumber", "Other"]
)
_result_codes = st.one_of(st.integers(), texts, st.sampled_from(["0", "1032", " 0 "]))


class Shapes:
    """Provider documents whose fields are junk one time in `junk_one_in` (0: never)."""

    def __init__(self, junk_one_in: int) -> None:
        self.junk = junk_one_in

    def obj(
        self, fields: dict[str, st.SearchStrategy[Any]], *, required: tuple[str, ...] = ()
    ) -> st.SearchStrategy[dict[str, Any]]:
        """An object with these fields, the ones not `required` possibly left out, plus stray
        extra fields. Junk in a field holding the rest of the document hides all below it, so
        required (structural) fields are junk less often."""
        present = {k: maybe(v, self.junk * 3) for k, v in fields.items() if k in required}
        optional = {k: maybe(v, self.junk) for k, v in fields.items() if k not in required}
        extras = st.dictionaries(texts, json_values, max_size=2)
        return st.tuples(st.fixed_dictionaries(present, optional=optional), extras).map(
            lambda pair: {**pair[1], **pair[0]}
        )

    def lists(self, item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return maybe(st.lists(item, max_size=3), self.junk * 3)

    def whatsapp(self) -> st.SearchStrategy[dict[str, Any]]:
        o, error = self.obj, self.obj({"code": st.integers(), "title": texts, "message": texts})
        reply = o({"id": ids, "title": texts})
        kinds = st.sampled_from(["button_reply", "list_reply", "nfm_reply"])
        message = o(
            {
                "from": phone_digits,
                "id": ids,
                "timestamp": stamps,
                "type": st.sampled_from(["text", "interactive", "button", "image", "x"]),
                "text": o({"body": texts}),
                "interactive": o({"type": kinds, "button_reply": reply, "list_reply": reply}),
                "button": o({"payload": texts, "text": texts}),
                "context": o({"id": ids, "from": phone_digits}),
                "errors": self.lists(error),
                "from_user_id": ids,
            },
            required=("from", "id", "timestamp", "type"),
        )
        status = o(
            {
                "id": ids,
                "status": st.sampled_from(["sent", "delivered", "read", "failed", "deleted"]),
                "timestamp": stamps,
                "recipient_id": phone_digits,
                "errors": self.lists(error),
            },
            required=("id", "status", "timestamp"),
        )
        value = o(
            {
                "messaging_product": st.just("whatsapp"),
                "metadata": o({"display_phone_number": phone_digits, "phone_number_id": ids}),
                "contacts": self.lists(o({"wa_id": phone_digits, "profile": o({"name": texts})})),
                "messages": self.lists(message),
                "statuses": self.lists(status),
                "errors": self.lists(error),
            },
            required=("messages", "statuses"),
        )
        fields = st.sampled_from(["messages", "messages", "account_update"])
        change = o({"field": fields, "value": value}, required=("value",))
        entry = o({"id": ids, "changes": self.lists(change)}, required=("changes",))
        objects = st.just("whatsapp_business_account")
        return o({"object": objects, "entry": self.lists(entry)}, required=("entry",))

    def stk_callback(self) -> st.SearchStrategy[dict[str, Any]]:
        o = self.obj
        item = o({"Name": _item_names, "Value": json_values})
        callback = o(
            {
                "MerchantRequestID": ids,
                "CheckoutRequestID": ids,
                "ResultCode": _result_codes,
                "ResultDesc": texts,
                "CallbackMetadata": o({"Item": self.lists(item)}, required=("Item",)),
            },
            required=("MerchantRequestID", "CheckoutRequestID", "ResultCode"),
        )
        return o(
            {"Body": o({"stkCallback": callback}, required=("stkCallback",))}, required=("Body",)
        )


# Near-valid documents, some with junk here and there, some with only odd values.
wa_envelope = st.one_of(Shapes(8).whatsapp(), Shapes(0).whatsapp())
stk_callback = st.one_of(Shapes(8).stk_callback(), Shapes(0).stk_callback())


def as_bytes(value: Any) -> bytes:
    """JSON text of `value` (NaN and huge numbers included, as Python writes them)."""
    return json.dumps(value).encode("utf-8", "surrogatepass")


def mutated(document: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The JSON bytes of `document` with a few bytes flipped, cut or repeated."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(as_bytes(draw(document)))
        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            if not data:
                break
            at = draw(st.integers(min_value=0, max_value=len(data) - 1))
            action = draw(st.sampled_from(["flip", "cut", "repeat"]))
            if action == "flip":
                data[at] = draw(st.integers(min_value=0, max_value=255))
            elif action == "cut":
                del data[at:]
            else:
                data[at:at] = data[at : at + 8]
        return bytes(data)

    return build()


def bodies(document: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Raw request bodies: random bytes, any JSON, the near-valid shape, and mutations of it."""
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(as_bytes),
        document.map(as_bytes),
        document.map(as_bytes),
        mutated(document),
        # Nesting deeper than a JSON parser's recursion limit.
        st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n + b"]" * n),
    )
