"""The callback delivery policy: how many POSTs are in flight, what an answer means, when to wait
(Retry-After), when to stop trying for this try (circuit breaker). No Airflow, no HTTP client:
the loop sends through a :class:`Sender` (``CallbackHook`` in production, a function in tests),
the way http's ``AsyncHttpSession`` owns its retry policy apart from the request itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal

from cupid_airflow.core.events import Event

__all__ = [
    "Answer",
    "Delivery",
    "DeliveryPolicy",
    "DeliveryReport",
    "LatencySample",
    "SendFailed",
    "Sender",
    "deliver_all",
    "retry_after_seconds",
]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the receiver said to one POST."""

    status: int
    text: str = ""
    retry_after: str | None = None


class SendFailed(Exception):
    """No answer at all: cannot connect, timed out, TLS or protocol error."""

    def __init__(self, detail: str, connection_problem: bool = True) -> None:
        super().__init__(detail)
        self.detail = detail
        self.connection_problem = connection_problem


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one event: ``delivered``, ``failed`` (try again later) or ``gone`` (410: never)."""

    outcome: Literal["delivered", "failed", "gone"]
    detail: str = ""
    connection_problem: bool = False


Sender = Callable[[Event], Awaitable[Answer]]


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date (RFC 9110 10.2.3);
    None when absent or unreadable. A date in the past means "now" (0)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class DeliveryPolicy:
    """When an event counts as delivered, and how hard one try pushes."""

    #: The longest Retry-After waited for inside one try; longer ones are left to the task retry.
    max_retry_after: float = 60.0
    #: How many times one event is sent inside a try while the receiver throttles (429/503).
    max_throttled_attempts: int = 5
    #: After this many connection failures or timeouts in a row the receiver is taken as down and
    #: the rest of the try is skipped; the task retry sends everything not yet delivered.
    circuit_breaker: int = 10

    def judge(self, answer: Answer) -> Delivery | float:
        """A final outcome, or the seconds to wait before sending the same event again."""
        if 200 <= answer.status < 300:
            return Delivery("delivered")
        if answer.status == 410:
            return Delivery("gone", f"HTTP 410 Gone: {answer.text[:200]}")
        wait = retry_after_seconds(answer.retry_after) if answer.status in (429, 503) else None
        if wait is None or wait > self.max_retry_after:
            suffix = f", Retry-After {wait:g} s" if wait is not None else ""
            return Delivery("failed", f"HTTP {answer.status}{suffix}: {answer.text[:200]}")
        return wait


#: How many undelivered events a report keeps, with their reasons, for the log.
SAMPLES = 20
#: How many POST times a report keeps for the latency metric. A timing sent per POST costs about
#: 7 us (14 us with Airflow's legacy names) against some 125 us per event at 8,000 events/s: a
#: uniform sample keeps the percentiles for a fixed, small cost whatever the number of events.
LATENCY_SAMPLES = 100


@dataclass
class LatencySample:
    """A uniform sample (reservoir) of at most :data:`LATENCY_SAMPLES` POST times, in seconds,
    with the exact count and maximum of all of them."""

    count: int = 0
    longest: float = 0.0
    seconds: list[float] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.longest = max(self.longest, seconds)
        if len(self.seconds) < LATENCY_SAMPLES:
            self.seconds.append(seconds)
            return
        slot = self._rng.randrange(self.count)
        if slot < LATENCY_SAMPLES:
            self.seconds[slot] = seconds


@dataclass
class DeliveryReport:
    """The outcome of one delivery pass: counts, and the first few problems. It holds no event it
    does not show, so delivering any number of events costs the same memory."""

    delivered: int = 0
    failed: int = 0
    gone: int = 0
    problems: list[tuple[Event, Delivery]] = field(default_factory=list)  # the first SAMPLES failed or gone
    reasons: set[str] = field(default_factory=set)  # of failures, the detail up to its first ":"
    receiver_down: bool = False
    sent: int = 0  # events POSTed at least once
    latency: LatencySample = field(default_factory=LatencySample)  # one entry per POST

    @property
    def undelivered(self) -> int:
        return self.failed + self.gone

    @property
    def resent(self) -> int:
        """POSTs that sent an event again (a 429/503 Retry-After waited out)."""
        return self.latency.count - self.sent

    def record(self, event: Event, result: Delivery) -> None:
        if result.outcome == "delivered":
            self.delivered += 1
            return
        if result.outcome == "gone":
            self.gone += 1
        else:
            self.failed += 1
            self.reasons.add(result.detail.split(":")[0])
        if len(self.problems) < SAMPLES:
            self.problems.append((event, result))


async def deliver_one(send: Sender, event: Event, policy: DeliveryPolicy) -> Delivery:
    """Send one event, waiting out short Retry-Afters, until the policy gives an outcome."""
    for _ in range(policy.max_throttled_attempts):
        try:
            answer = await send(event)
        except SendFailed as e:
            return Delivery("failed", e.detail, connection_problem=e.connection_problem)
        verdict = policy.judge(answer)
        if isinstance(verdict, Delivery):
            return verdict
        await asyncio.sleep(verdict)
    return Delivery("failed", f"still throttled after {policy.max_throttled_attempts} attempts")


async def deliver_all(
    events: Iterable[Event],
    send: Sender,
    concurrency: int,
    policy: DeliveryPolicy | None = None,
    on_outcome: Callable[[Event, Delivery], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
    checkpoint_every: float = 1.0,
) -> DeliveryReport:
    """Deliver ``events`` (read lazily: they may come a chunk at a time) with ``concurrency`` in
    flight. ``on_outcome`` hears of every event's outcome; ``checkpoint()`` is called at most every
    ``checkpoint_every`` seconds, to save what was delivered so a killed worker resends little."""
    policy = policy or DeliveryPolicy()
    report = DeliveryReport()
    todo = iter(events)
    streak = 0
    saved = time.monotonic()

    def record(event: Event, result: Delivery) -> None:
        nonlocal streak, saved
        report.record(event, result)
        if on_outcome is not None:
            on_outcome(event, result)
        if result.outcome == "delivered":
            streak = 0
        elif result.outcome == "failed":
            streak = streak + 1 if result.connection_problem else 0
            if streak >= policy.circuit_breaker:
                report.receiver_down = True
        if checkpoint is not None and time.monotonic() - saved >= checkpoint_every:
            checkpoint()
            saved = time.monotonic()

    async def timed(event: Event) -> Answer:
        start = time.perf_counter()
        try:
            return await send(event)
        finally:
            report.latency.add(time.perf_counter() - start)

    async def worker() -> None:  # ``concurrency`` of these share one iterator: no task per event
        for event in todo:
            if report.receiver_down:
                record(event, Delivery("failed", "skipped: the receiver looked down", connection_problem=True))
            else:
                report.sent += 1
                record(event, await deliver_one(timed, event, policy))

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return report
