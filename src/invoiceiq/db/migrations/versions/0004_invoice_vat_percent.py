"""the VAT rate an invoice was issued at

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

An invoice is a tax document: it shows the rate it charged, not today's VAT_PERCENT (Kenya's
rate went from 16 % to 14 % and back in 2020-21). Null on invoices issued before this revision,
which show VAT_PERCENT as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoice") as batch:
        batch.add_column(sa.Column("vat_percent", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoice") as batch:
        batch.drop_column("vat_percent")
