"""Payment attempt statuses and their transition table (DESIGN §4)."""

from enum import StrEnum

from invoiceiq.kit.state_machine import TransitionTable


class PaymentStatus(StrEnum):
    INITIATED = "INITIATED"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


# FAILED -> SUCCESS: Safaricom may report a success after we gave up on the attempt, and money
# received always wins. SUCCESS is final.
PAYMENT_TRANSITIONS = TransitionTable[PaymentStatus](
    "payment",
    {
        PaymentStatus.INITIATED: {PaymentStatus.SUCCESS, PaymentStatus.FAILED},
        PaymentStatus.FAILED: {PaymentStatus.SUCCESS},
        PaymentStatus.SUCCESS: set(),
    },
)
