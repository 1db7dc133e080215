"""One sweep: list running servers, stop those past their deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from ..hub_api import HubAPIError, HubClient
from .metrics import Metrics
from .studios import Studio, StudioRules

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    checked: int = 0
    overdue: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warning: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Sweeper:
    """Stops every ready server whose deadline has passed, at most ``concurrency`` at a time."""

    def __init__(self, client: HubClient, rules: StudioRules, metrics: Metrics, *,
                 concurrency: int = 10, page_limit: int = 200, dry_run: bool = False) -> None:
        self.client = client
        self.rules = rules
        self.metrics = metrics
        self.concurrency = concurrency
        self.page_limit = page_limit
        self.dry_run = dry_run

    async def sweep(self) -> SweepResult:
        """One pass. Lists everything first, then stops, so deletions never shift the pages."""
        t0 = time.perf_counter()
        result = SweepResult()
        running: list[tuple[str, str, str | None]] = []
        overdue: list[Studio] = []
        now = self.rules.clock()
        async for user in self.client.iter_users(state="ready", limit=self.page_limit):
            for studio in self.rules.studios(user, now):
                running.append((studio.user, studio.server, studio.started))
                if not studio.ready:
                    continue  # pending spawn or stop: the hub would refuse, look again next time
                result.checked += 1
                if studio.status.overdue:
                    overdue.append(studio)
                elif studio.status.warning:
                    result.warning.append(studio.key)
        result.overdue = [s.key for s in overdue]
        sem = asyncio.Semaphore(self.concurrency)
        outcomes = await asyncio.gather(*(self._stop(s, sem) for s in overdue))
        result.stopped = [s.key for s, ok in zip(overdue, outcomes) if ok]
        result.failed = [s.key for s, ok in zip(overdue, outcomes) if not ok]
        self.rules.store.prune(running)
        result.seconds = time.perf_counter() - t0
        self.metrics.sweep_duration.observe(result.seconds)
        self.metrics.running.set(result.checked)
        self.metrics.overdue.set(len(overdue))
        self.metrics.warning.set(len(result.warning))
        log.info("Sweep: %d running, %d overdue, %d stopped, %d failed in %.2fs", result.checked,
                 len(overdue), len(result.stopped), len(result.failed), result.seconds)
        return result

    async def _stop(self, studio: Studio, sem: asyncio.Semaphore) -> bool:
        async with sem:
            why = (f"{studio.lifespan.reason}; started {studio.started}, deadline "
                   f"{studio.status.deadline.isoformat() if studio.status.deadline else '-'}")
            if self.dry_run:
                log.info("Would stop %s (dry run): %s", studio.label, why)
                return True
            try:
                code = await self.client.stop_server(studio.user, studio.server)
            except HubAPIError as e:
                self.metrics.errors.labels("stop").inc()
                log.error("Failed to stop %s (%s): %s", studio.label, why, e)
                return False
            self.metrics.stopped.inc()
            log.info("Stopped %s [%s]: %s", studio.label, code, why)
            return True
