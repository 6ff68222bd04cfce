"""Calls from one actor to another by name, with one retry policy (tenacity).

An actor that calls another finds it by name in its namespace and keeps the handle. When
the callee dies, is restarting, or has no actor of that name yet (the kernel restarts
actors under the same name), the handle is forgotten, the name is looked up again, and
the call is tried again, waiting between tries on ONE curve for every caller:
exponential (:data:`FIRST_WAIT_S`, doubling, at most :data:`LONGEST_WAIT_S`) plus up to
:data:`JITTER_S` at random, so that callers that failed together do not retry in step.
Each caller bounds its tries by a deadline (and may bound the calls made); no wait runs
past the deadline. Once retries are spent, the last error is raised for the caller to
name; an error of another kind (the callee's own exception) is raised at once, untried.

A call given a list of names fails over: each failure moves that list on to its next
name, and later calls start from there (a camera's embedder replicas). Nothing here
knows what the actors do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import ray
import ray.exceptions
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

__all__ = ["FIRST_WAIT_S", "JITTER_S", "LONGEST_WAIT_S", "ActorCalls", "Retried"]

FIRST_WAIT_S = 0.2
"""The wait after the first failed try, in seconds; it doubles with each try after."""

LONGEST_WAIT_S = 2.0
"""The longest wait between two tries, in seconds."""

JITTER_S = 0.1
"""Up to this many seconds are added at random to each wait."""

Retried = Callable[[str, BaseException, int], None]
"""Told of each failed try that will be tried again: the name, the error, the try (from 1)."""


class _CallsMade(stop_base):
    """Stops once ``limit`` calls of the method (not look-ups) have been made and failed."""

    def __init__(self, limit: int, made: list[int]) -> None:
        self.limit = limit
        self.made = made

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.made[0] >= self.limit


class _Stopped(stop_base):
    """Stops when the caller's ``give_up`` says so."""

    def __init__(self, give_up: Callable[[], bool]) -> None:
        self.give_up = give_up

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.give_up()


class ActorCalls:
    """One actor's calls to the actors it names, with their handles kept between calls.

    ``resolve`` finds an actor's handle by name (default: ``ray.get_actor`` in
    ``namespace``, off the event loop); a look-up that raises ``ValueError`` (no actor of
    that name yet) is retried. ``retry_on`` are the call errors that are retried (default:
    Ray's actor errors: the actor died, is restarting or cannot be reached).
    """

    def __init__(
        self,
        namespace: str,
        *,
        resolve: Callable[[str], Any] | None = None,
        retry_on: tuple[type[BaseException], ...] = (ray.exceptions.RayActorError,),
    ) -> None:
        self.namespace = namespace
        self.retry_on = retry_on
        self.resolves = 0
        self._resolve = resolve or (lambda name: ray.get_actor(name, namespace=namespace))
        self._handles: dict[str, Any] = {}
        self._next: dict[tuple[str, ...], int] = {}

    async def handle(self, name: str) -> Any:
        """The actor's handle: the one kept, or found now (``ValueError`` if there is none)."""
        handle = self._handles.get(name)
        if handle is None:
            # ray.get_actor blocks on the cluster's control store; keep the loop free.
            handle = await asyncio.to_thread(self._resolve, name)
            self._handles[name] = handle
            self.resolves += 1
        return handle

    def forget(self, name: str) -> None:
        """Drop the kept handle, so the next call looks the name up again."""
        self._handles.pop(name, None)

    def current(self, names: Sequence[str]) -> str:
        """The name of ``names`` the next call starts with."""
        return names[self._next.get(tuple(names), 0) % len(names)]

    async def call(
        self,
        names: str | Sequence[str],
        method: str,
        *args: Any,
        deadline_s: float,
        max_calls: int | None = None,
        retried: Retried | None = None,
        give_up: Callable[[], bool] | None = None,
    ) -> Any:
        """``method(*args)`` on the named actor, retried on the policy within ``deadline_s``.

        With several ``names``, each failed try moves on to the next name. ``max_calls``
        bounds how many times the method itself is called (look-ups do not count);
        ``give_up`` stops the retries early when it returns True (a stop). Raises the last
        error once the retries are spent.
        """
        group = (names,) if isinstance(names, str) else tuple(names)
        made = [0]
        looking_up = [False]

        def retryable(exc: BaseException) -> bool:
            if looking_up[0]:
                return isinstance(exc, ValueError)
            return isinstance(exc, self.retry_on)

        stop: stop_base = stop_before_delay(deadline_s)
        if max_calls is not None:
            stop = stop | _CallsMade(max_calls, made)
        if give_up is not None:
            stop = stop | _Stopped(give_up)

        tried = [self.current(group)]

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if retried is not None and error is not None:
                retried(tried[0], error, state.attempt_number)

        async for attempt in AsyncRetrying(
            stop=stop,
            wait=wait_exponential_jitter(
                multiplier=FIRST_WAIT_S, max=LONGEST_WAIT_S, jitter=JITTER_S
            ),
            retry=retry_if_exception(retryable),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                name = tried[0] = self.current(group)
                try:
                    looking_up[0] = True
                    handle = await self.handle(name)
                    looking_up[0] = False
                    made[0] += 1
                    return await getattr(handle, method).remote(*args)
                except BaseException as exc:
                    if retryable(exc):
                        self.forget(name)
                        self._next[group] = self._next.get(group, 0) + 1
                    raise
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
