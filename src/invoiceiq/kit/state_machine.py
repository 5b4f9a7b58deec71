"""Transition tables applied as conditional UPDATEs, so concurrent changes cannot both win."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from invoiceiq.errors import Conflict

S = TypeVar("S", bound=StrEnum)


class TransitionRefused(Conflict):
    code = "transition_refused"

    def __init__(self, entity: str, current: str | None, target: str) -> None:
        self.entity, self.current, self.target = entity, current, target
        super().__init__(f"This {entity} is {current or 'gone'} and cannot become {target}.")


class TransitionTable(Generic[S]):
    """Which status may follow which; terminal statuses have no successors."""

    def __init__(self, entity: str, allowed: Mapping[S, set[S]]) -> None:
        self.entity = entity
        self._allowed = {source: frozenset(targets) for source, targets in allowed.items()}

    @property
    def states(self) -> frozenset[S]:
        return frozenset(self._allowed)

    def allows(self, source: S, target: S) -> bool:
        return target in self._allowed.get(source, frozenset())

    def sources(self, target: S) -> frozenset[S]:
        return frozenset(s for s, targets in self._allowed.items() if target in targets)

    def is_terminal(self, state: S) -> bool:
        return not self._allowed.get(state)

    async def apply(
        self,
        session: AsyncSession,
        model: Any,
        row_id: uuid.UUID,
        target: S,
        *,
        source: S | Iterable[S] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """Move row `row_id` to `target` if it is in an allowed source status, atomically.

        `source` narrows the allowed sources (default: every status that may become `target`).
        Raises TransitionRefused when the table forbids it or the row is no longer in a source
        status (someone else moved it first).
        """
        allowed = self.sources(target)
        if source is not None:
            wanted = {source} if isinstance(source, StrEnum) else set(source)
            allowed = allowed & frozenset(wanted) if wanted <= allowed else frozenset()
        if allowed:
            statement = (
                sa.update(model)
                .where(model.id == row_id, model.status.in_(allowed))
                .values(status=target, **(values or {}))
                .execution_options(synchronize_session=False)
            )
            result = await session.execute(statement)
            if result.rowcount == 1:  # type: ignore[attr-defined]
                _sync_loaded_row(session, model, row_id, {"status": target, **(values or {})})
                return
        current = await session.scalar(sa.select(model.status).where(model.id == row_id))
        raise TransitionRefused(self.entity, current.value if current else None, target.value)


def _sync_loaded_row(
    session: AsyncSession, model: Any, row_id: uuid.UUID, values: Mapping[str, Any]
) -> None:
    """Give a row already loaded in this session the values just written (no extra SELECT)."""
    loaded = session.sync_session.identity_map.get(session.sync_session.identity_key(model, row_id))
    if loaded is not None:
        for name, value in values.items():
            set_committed_value(loaded, name, value)
