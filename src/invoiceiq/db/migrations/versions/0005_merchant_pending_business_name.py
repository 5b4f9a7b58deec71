"""a new business name waiting for approval

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

Under MERCHANT_SIGNUP=approval an approved merchant's new name is approved too before customers
see it: it waits here, and invoices, pages and receipts keep the approved name meanwhile.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("merchant") as batch:
        batch.add_column(sa.Column("pending_business_name", sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("merchant") as batch:
        batch.drop_column("pending_business_name")
