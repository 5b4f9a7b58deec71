"""The outbox topic → handler table, wired once per process.

Topics arrive with their features (WhatsApp sends, STK pushes and queries); a row whose topic
has no handler goes dead with that reason rather than being silently skipped.
"""

from __future__ import annotations

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.worker import Handler


def outbox_handlers(settings: Settings, sessions: SessionFactory) -> dict[str, Handler]:
    del settings, sessions  # used by the handlers that arrive with later features
    return {}
