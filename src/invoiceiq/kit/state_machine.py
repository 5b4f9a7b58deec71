"""Transition tables applied as conditional UPDATEs, so concurrent changes cannot both win."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

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
            refused = [s for s in wanted if s not in allowed]
            if refused:
                raise TransitionRefused(self.entity, refused[0].value, target.value)
            allowed = frozenset(wanted)
        if not allowed:
            raise TransitionRefused(self.entity, None, target.value)
        statement = (
            sa.update(model)
            .where(model.id == row_id, model.status.in_(allowed))
            .values(status=target, **(values or {}))
            .execution_options(synchronize_session="fetch")
        )
        result = await session.execute(statement)
        if result.rowcount != 1:  # type: ignore[attr-defined]
            current = await session.scalar(sa.select(model.status).where(model.id == row_id))
            raise TransitionRefused(
                self.entity, current.value if current else None, target.value
            )
