"""create every table

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import invoiceiq.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_event",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("received_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_event")),
        sa.UniqueConstraint(
            "source", "external_id", name=op.f("uq_inbox_event_source_external_id")
        ),
    )
    op.create_table(
        "merchant",
        sa.Column("phone", sa.String(length=15), nullable=False),
        sa.Column("business_name", sa.String(length=80), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "pending_approval",
                "suspended",
                name="merchantstatus",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("vat_enabled", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant")),
        sa.UniqueConstraint("phone", name=op.f("uq_merchant_phone")),
    )
    op.create_table(
        "outbox_message",
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("dedupe_key", sa.String(length=255), nullable=True),
        sa.Column("ordering_key", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "running",
                "done",
                "dead",
                name="outboxstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_until", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("done_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_message")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_outbox_message_dedupe_key")),
    )
    op.create_index(
        op.f("ix_outbox_message_ordering_key_created_at"),
        "outbox_message",
        ["ordering_key", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_outbox_message_status_available_at"),
        "outbox_message",
        ["status", "available_at"],
        unique=False,
    )
    op.create_table(
        "provider_token",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("token", sa.Text(), nullable=True),
        sa.Column("expires_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_provider_token")),
    )
    op.create_table(
        "conversation",
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("expires_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchant.id"],
            name=op.f("fk_conversation_merchant_id_merchant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation")),
        sa.UniqueConstraint("merchant_id", name=op.f("uq_conversation_merchant_id")),
    )
    op.create_table(
        "customer",
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("phone", sa.String(length=15), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=True),
        sa.Column("last_inbound_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opted_out_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchant.id"],
            name=op.f("fk_customer_merchant_id_merchant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer")),
        sa.UniqueConstraint("merchant_id", "phone", name=op.f("uq_customer_merchant_id_phone")),
    )
    op.create_index(op.f("ix_customer_phone"), "customer", ["phone"], unique=False)
    op.create_table(
        "invoice",
        sa.Column("number", sa.String(length=12), nullable=False),
        sa.Column("public_token", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=True),
        sa.Column("customer_phone", sa.String(length=15), nullable=False),
        sa.Column("customer_name", sa.String(length=80), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("vat_cents", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(length=120), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "PENDING",
                "SENT",
                "PAID",
                "CANCELLED",
                name="invoicestatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("sent_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("paid_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_reminded_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_invoice_amount_positive")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_invoice_customer_id_customer"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchant.id"],
            name=op.f("fk_invoice_merchant_id_merchant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice")),
        sa.UniqueConstraint("number", name=op.f("uq_invoice_number")),
        sa.UniqueConstraint("public_token", name=op.f("uq_invoice_public_token")),
    )
    op.create_index(
        op.f("ix_invoice_customer_phone_status"),
        "invoice",
        ["customer_phone", "status"],
        unique=False,
    )
    op.create_index(
        op.f("ix_invoice_merchant_id_status_created_at"),
        "invoice",
        ["merchant_id", "status", "created_at"],
        unique=False,
    )
    op.create_table(
        "message_log",
        sa.Column(
            "direction",
            sa.Enum("in", "out", name="direction", native_enum=False, length=8),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("phone", sa.String(length=15), nullable=False),
        sa.Column("provider_message_id", sa.String(length=128), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "sent",
                "delivered",
                "read",
                "failed",
                name="deliverystatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("template_name", sa.String(length=64), nullable=True),
        sa.Column("invoice_id", sa.Uuid(), nullable=True),
        sa.Column(
            "request",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("status_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_message_log_invoice_id_invoice"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_log")),
        sa.UniqueConstraint("provider_message_id", name=op.f("uq_message_log_provider_message_id")),
    )
    op.create_index(op.f("ix_message_log_invoice_id"), "message_log", ["invoice_id"], unique=False)
    op.create_index(
        op.f("ix_message_log_phone_created_at"),
        "message_log",
        ["phone", "created_at"],
        unique=False,
    )
    op.create_table(
        "payment",
        sa.Column("invoice_id", sa.Uuid(), nullable=True),
        sa.Column("phone", sa.String(length=15), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "INITIATED", "SUCCESS", "FAILED", name="paymentstatus", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("checkout_request_id", sa.String(length=64), nullable=True),
        sa.Column("merchant_request_id", sa.String(length=64), nullable=True),
        sa.Column("receipt_number", sa.String(length=32), nullable=True),
        sa.Column("result_code", sa.String(length=32), nullable=True),
        sa.Column("result_desc", sa.String(length=255), nullable=True),
        sa.Column("push_sent_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("confirmed_by", sa.String(length=16), nullable=True),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("review_reason", sa.String(length=255), nullable=True),
        sa.Column("reviewed_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column(
            "request_body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "callback_body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", invoiceiq.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_payment_amount_positive")),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_payment_invoice_id_invoice"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment")),
        sa.UniqueConstraint("checkout_request_id", name=op.f("uq_payment_checkout_request_id")),
        sa.UniqueConstraint("merchant_request_id", name=op.f("uq_payment_merchant_request_id")),
        sa.UniqueConstraint("receipt_number", name=op.f("uq_payment_receipt_number")),
    )
    op.create_index(op.f("ix_payment_invoice_id"), "payment", ["invoice_id"], unique=False)
    op.create_index(op.f("ix_payment_needs_review"), "payment", ["needs_review"], unique=False)
    op.create_index(
        op.f("ix_payment_phone_amount_cents_push_sent_at"),
        "payment",
        ["phone", "amount_cents", "push_sent_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_payment_status_push_sent_at"), "payment", ["status", "push_sent_at"], unique=False
    )
    op.create_index(
        "uq_payment_one_initiated_per_invoice",
        "payment",
        ["invoice_id"],
        unique=True,
        sqlite_where=sa.text("status = 'INITIATED'"),
        postgresql_where=sa.text("status = 'INITIATED'"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_payment_one_initiated_per_invoice",
        table_name="payment",
        sqlite_where=sa.text("status = 'INITIATED'"),
        postgresql_where=sa.text("status = 'INITIATED'"),
    )
    op.drop_index(op.f("ix_payment_status_push_sent_at"), table_name="payment")
    op.drop_index(op.f("ix_payment_phone_amount_cents_push_sent_at"), table_name="payment")
    op.drop_index(op.f("ix_payment_needs_review"), table_name="payment")
    op.drop_index(op.f("ix_payment_invoice_id"), table_name="payment")
    op.drop_table("payment")
    op.drop_index(op.f("ix_message_log_phone_created_at"), table_name="message_log")
    op.drop_index(op.f("ix_message_log_invoice_id"), table_name="message_log")
    op.drop_table("message_log")
    op.drop_index(op.f("ix_invoice_merchant_id_status_created_at"), table_name="invoice")
    op.drop_index(op.f("ix_invoice_customer_phone_status"), table_name="invoice")
    op.drop_table("invoice")
    op.drop_index(op.f("ix_customer_phone"), table_name="customer")
    op.drop_table("customer")
    op.drop_table("conversation")
    op.drop_table("provider_token")
    op.drop_index(op.f("ix_outbox_message_status_available_at"), table_name="outbox_message")
    op.drop_index(op.f("ix_outbox_message_ordering_key_created_at"), table_name="outbox_message")
    op.drop_table("outbox_message")
    op.drop_table("merchant")
    op.drop_table("inbox_event")
