"""One request budget for a whole Ray cluster: a token bucket in a small actor.

The API's rate limit belongs to the key, not to a process, so tasks on many nodes must share
one budget rather than each run its own. Every request of a task's client takes a permit
first (:class:`SharedPermits`, the client's ``permits``): the actor reserves the next token
and answers how long to wait for it, and the task sleeps that long itself, so the actor never
blocks and a permit costs one small actor call. The refill rate follows the rule a client's
concurrency follows (:class:`pipeline.api.client.Aimd`): a 429 halves it, once per round; a
run of successes as long as the rate adds one request per second back, up to the rate asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import ray

from pipeline.api.client import Aimd


@dataclass(frozen=True)
class BudgetStatistics:
    """What the budget gave: ``permits`` in all, the ``rate`` it refills at now (requests a
    second), and the ``throttled`` 429s reported."""

    permits: int
    rate: int
    throttled: int


class TokenBucket:
    """Tokens at ``rate`` a second (adapted by :class:`Aimd`), at most ``burst`` saved up.

    :meth:`reserve` always hands out a token, possibly one not yet refilled: the answer is
    then how long its taker waits, so takers are served in order without the bucket waiting."""

    def __init__(self, rate: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._aimd = Aimd(rate)
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.permits = 0
        self.throttles = 0

    @property
    def rate(self) -> int:
        return self._aimd.limit

    def reserve(self) -> tuple[float, int]:
        """Take a token: (seconds until it is there, the round it was taken in)."""
        now = self._clock()
        self._tokens = min(float(self._burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1
        self.permits += 1
        wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        return wait, self._aimd.round

    def throttled(self, sent_in_round: int) -> None:
        self.throttles += 1
        if self._aimd.throttled(sent_in_round):
            self._tokens = min(self._tokens, 0.0)  # what was saved up was too much already

    def succeeded(self) -> None:
        self._aimd.succeeded()


@ray.remote(num_cpus=0, max_restarts=-1)
class RequestBudget:
    """The cluster's token bucket, as a Ray actor (no CPU of its own; restarted if lost)."""

    def __init__(self, rate: int, burst: int) -> None:
        self._bucket = TokenBucket(rate, burst)

    def reserve(self) -> tuple[float, int]:
        return self._bucket.reserve()

    def throttled(self, sent_in_round: int) -> None:
        self._bucket.throttled(sent_in_round)

    def succeeded(self) -> None:
        self._bucket.succeeded()

    def statistics(self) -> BudgetStatistics:
        return BudgetStatistics(self._bucket.permits, self._bucket.rate, self._bucket.throttles)


def request_budget(rate: float, burst: int | None = None) -> ray.actor.ActorHandle:
    """A new budget of ``rate`` requests a second (at least one), of which ``burst`` (by
    default one second's worth) may go at once after a quiet spell."""
    whole = max(1, round(rate))
    return RequestBudget.remote(whole, burst or whole)  # type: ignore[attr-defined]


class SharedPermits:
    """A client's side of the budget (:class:`pipeline.api.client.Permits`): it pickles as the
    actor's handle alone, so it travels to tasks with no secret in it."""

    def __init__(self, budget: ray.actor.ActorHandle) -> None:
        self.budget = budget

    async def take(self) -> int:
        wait, sent_in_round = await self.budget.reserve.remote()
        if wait > 0:
            await anyio.sleep(wait)
        return int(sent_in_round)

    def throttled(self, sent_in_round: int) -> None:
        self.budget.throttled.remote(sent_in_round)

    def succeeded(self) -> None:
        self.budget.succeeded.remote()
