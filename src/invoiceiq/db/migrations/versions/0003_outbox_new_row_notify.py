"""on PostgreSQL, a notification when a transaction adds outbox rows that are due

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

A worker in another process (`invoiceiq worker`) listens on the channel and claims at once,
instead of at its next poll. The notification is sent at commit, and only if the transaction
commits; PostgreSQL folds identical notifications of one transaction into one. SQLite has one
process, whose worker its own commits wake: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The channel's name is also in invoiceiq.outbox.listener.CHANNEL; a test checks they agree.
_FUNCTION = """
CREATE FUNCTION outbox_message_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The clock at this moment (not the transaction's start, which can be older than the
    -- rows' own timestamps), with a second's slack for the app's clock.
    IF EXISTS (SELECT 1 FROM added WHERE available_at <= clock_timestamp() + interval '1 second')
    THEN
        PERFORM pg_notify('invoiceiq_outbox', '');
    END IF;
    RETURN NULL;
END
$$
"""
_TRIGGER = """
CREATE TRIGGER outbox_message_notify
AFTER INSERT ON outbox_message
REFERENCING NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION outbox_message_notify()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    op.execute(_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER outbox_message_notify ON outbox_message")
    op.execute("DROP FUNCTION outbox_message_notify()")
