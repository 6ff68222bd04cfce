"""The kernel's one actor-call helper: look-ups, retries, failover, deadlines (no Ray)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import ray.exceptions

from lfr_actors.kernel import calls
from lfr_actors.kernel.calls import ActorCalls
from lfr_actors.testing.doubles import LocalHandle


@dataclass
class Callee:
    """Answers ``ping`` with its name; raises the errors queued in ``errors`` first."""

    name: str
    errors: list[BaseException] = field(default_factory=list)
    calls: int = 0

    async def ping(self, value: int) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return f"{self.name}:{value}"


class Registry:
    """Actors by name, as Ray's ``get_actor`` finds them; missing names raise ValueError."""

    def __init__(self, *callees: Callee, missing: int = 0) -> None:
        self.callees = {c.name: c for c in callees}
        self.missing = missing  # the first look-ups that find nothing (a restart)
        self.lookups: list[str] = []

    def resolve(self, name: str) -> Any:
        self.lookups.append(name)
        if self.missing:
            self.missing -= 1
            raise ValueError(f"Failed to look up actor with name '{name}'")
        return LocalHandle(self.callees[name])


@pytest.fixture(autouse=True)
def _quick_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy's curve, scaled down 20 times so that the tests run in milliseconds."""
    monkeypatch.setattr(calls, "FIRST_WAIT_S", 0.01)
    monkeypatch.setattr(calls, "LONGEST_WAIT_S", 0.1)
    monkeypatch.setattr(calls, "JITTER_S", 0.005)


async def test_the_handle_is_kept_between_calls() -> None:
    registry = Registry(Callee("a"))
    caller = ActorCalls("ns", resolve=registry.resolve)
    assert await caller.call("a", "ping", 1, deadline_s=1) == "a:1"
    assert await caller.call("a", "ping", 2, deadline_s=1) == "a:2"
    assert registry.lookups == ["a"] and caller.resolves == 1


async def test_a_name_not_found_yet_is_looked_up_again() -> None:
    registry = Registry(Callee("a"), missing=2)
    seen: list[tuple[str, str, int]] = []
    caller = ActorCalls("ns", resolve=registry.resolve)
    answer = await caller.call(
        "a", "ping", 1, deadline_s=2, retried=lambda n, e, i: seen.append((n, type(e).__name__, i))
    )
    assert answer == "a:1"
    assert registry.lookups == ["a", "a", "a"]
    assert seen == [("a", "ValueError", 1), ("a", "ValueError", 2)]


async def test_a_dead_actor_is_forgotten_found_again_and_called_again() -> None:
    callee = Callee("a", errors=[ray.exceptions.RayActorError()])
    registry = Registry(callee)
    caller = ActorCalls("ns", resolve=registry.resolve)
    assert await caller.call("a", "ping", 7, deadline_s=2) == "a:7"
    assert callee.calls == 2 and registry.lookups == ["a", "a"]


async def test_the_callees_own_error_is_raised_at_once() -> None:
    callee = Callee("a", errors=[KeyError("refused")])
    caller = ActorCalls("ns", resolve=Registry(callee).resolve)
    with pytest.raises(KeyError, match="refused"):
        await caller.call("a", "ping", 1, deadline_s=2)
    assert callee.calls == 1
    # A ValueError from the callee is its own error too: only a look-up's is retried.
    callee.errors.append(ValueError("bad vectors"))
    with pytest.raises(ValueError, match="bad vectors"):
        await caller.call("a", "ping", 1, deadline_s=2)
    assert callee.calls == 2


async def test_retries_end_at_the_deadline_with_the_last_error() -> None:
    registry = Registry(Callee("a"), missing=10_000)
    caller = ActorCalls("ns", resolve=registry.resolve)
    started = time.monotonic()
    with pytest.raises(ValueError, match="Failed to look up actor"):
        await caller.call("a", "ping", 1, deadline_s=0.3)
    waited = time.monotonic() - started
    assert waited < 0.3  # no wait runs past the deadline
    # Exponential: 10, 20, 40, 80 ms, then 100 ms waits (each plus up to 5 ms) fit in 0.3 s.
    assert 4 <= len(registry.lookups) <= 6


async def test_several_names_fail_over_in_order_and_later_calls_start_there() -> None:
    first = Callee("e0", errors=[ray.exceptions.RayActorError()])
    second = Callee("e1")
    registry = Registry(first, second)
    caller = ActorCalls("ns", resolve=registry.resolve)
    names = ["e0", "e1"]
    assert await caller.call(names, "ping", 1, deadline_s=2) == "e1:1"
    assert caller.current(names) == "e1"
    assert await caller.call(names, "ping", 2, deadline_s=2) == "e1:2"
    assert registry.lookups == ["e0", "e1"]


async def test_max_calls_bounds_the_calls_but_not_the_look_ups() -> None:
    callee = Callee("a", errors=[ConnectionError("down")] * 5)
    registry = Registry(callee, missing=2)
    caller = ActorCalls("ns", resolve=registry.resolve, retry_on=(Exception,))
    with pytest.raises(ConnectionError):
        await caller.call("a", "ping", 1, deadline_s=5, max_calls=2)
    assert callee.calls == 2 and len(registry.lookups) == 4


async def test_give_up_ends_the_retries_early() -> None:
    registry = Registry(Callee("a"), missing=10_000)
    caller = ActorCalls("ns", resolve=registry.resolve)
    with pytest.raises(ValueError):
        await caller.call("a", "ping", 1, deadline_s=30, give_up=lambda: len(registry.lookups) >= 2)
    assert len(registry.lookups) == 2
