"""The sink contract, after Kafka Connect's SinkTask: ``write`` a batch, idempotently.

``write_until_stored`` is what the worker calls: it retries transient failures with capped
exponential backoff and only returns once the batch is stored, so an input offset is never acked
before its effect exists. Rows the store refuses for what they are (not for where the store is)
are isolated by bisection and handed back as poison, so one bad report never blocks the rest.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class TransientSinkError(Exception):
    """The store is unreachable or busy: retry the same batch later."""


class PoisonRowError(Exception):
    """The store refuses this data itself: retrying will not help."""


@dataclass
class WriteResult(Generic[T]):
    stored: int
    poison: list[tuple[T, str]]


class BatchSink(ABC, Generic[T]):
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0

    @abstractmethod
    async def write(self, batch: Sequence[T]) -> int:
        """Store the whole batch atomically; return rows newly stored. Raise Transient/PoisonRowError."""

    async def close(self) -> None:
        pass

    async def write_until_stored(self, batch: Sequence[T]) -> WriteResult[T]:
        delay = self.backoff_initial_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return WriteResult(await self.write(batch), [])
            except TransientSinkError as exc:
                log.warning("sink write failed (attempt %d), retrying in %.1fs: %s", attempt, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
            except PoisonRowError as exc:
                if len(batch) == 1:
                    return WriteResult(0, [(batch[0], str(exc))])
                mid = len(batch) // 2
                left = await self.write_until_stored(batch[:mid])
                right = await self.write_until_stored(batch[mid:])
                return WriteResult(left.stored + right.stored, left.poison + right.poison)
