"""Merchant statuses."""

from enum import StrEnum


class MerchantStatus(StrEnum):
    ACTIVE = "active"
    PENDING_APPROVAL = "pending_approval"
    SUSPENDED = "suspended"
