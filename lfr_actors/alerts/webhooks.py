"""Signed webhook requests: the signature, its check, and what to do after each attempt.

A request's body is the alert event's JSON document (the ``--alerts-jsonl`` line) and its
``X-LFR-Signature`` header is ``t=UNIX_SECONDS,v1=HEX``, where ``HEX`` is the HMAC-SHA256,
keyed with the shared secret, of ``f"{t}."`` followed by the raw body. A receiver computes
the same HMAC, compares in constant time and rejects a timestamp far from its clock (a
replayed request). ``X-LFR-Event-Id`` repeats the body's ``event_id``: a receiver keeps
the ids it has seen, since delivery is at least once.

After each attempt :func:`decide` says what comes next (:class:`Outcome`): a 2xx is
delivered; a timeout, a connection error, 408, 429 and every 5xx are retried, without
limit, with exponential backoff and full jitter (:func:`backoff_s`, at most
:data:`MAX_BACKOFF_S`), because the receiver is expected back; any other answer (a 3xx,
which is not followed, or a 4xx) is retried :data:`CLIENT_ERROR_ATTEMPTS` times in all,
then the event is skipped (logged and counted as failed) so one request the receiver
refuses cannot hold back every later event.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from enum import Enum

SIGNATURE_HEADER = "X-LFR-Signature"
EVENT_ID_HEADER = "X-LFR-Event-Id"
EVENT_KIND_HEADER = "X-LFR-Event"

CLIENT_ERROR_ATTEMPTS = 3
"""Attempts in all for an event the receiver refuses (a 4xx other than 408 and 429, a 3xx)."""
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 60.0
"""The longest wait between two attempts to deliver one event."""
TOLERANCE_S = 300
"""How far from the receiver's clock a signature's timestamp may be (:func:`verify`)."""


class Outcome(Enum):
    """What an attempt's answer means for the event."""

    DELIVERED = "delivered"
    RETRY = "retry"
    SKIP = "skip"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-LFR-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: bytes, header: str, body: bytes, now: float, tolerance_s: float = TOLERANCE_S
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_s`` of now.

    What a receiver does (the README shows the same in a few lines).
    """
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def decide(status: int | None, attempt: int) -> Outcome:
    """What comes after attempt number ``attempt`` (from 1) answered ``status``.

    ``status`` is None for a timeout or a connection error.
    """
    if status is not None and 200 <= status < 300:
        return Outcome.DELIVERED
    if status is None or status in (408, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.RETRY if attempt < CLIENT_ERROR_ATTEMPTS else Outcome.SKIP


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """The wait after failed attempt ``attempt`` (from 1): full jitter, doubling, capped."""
    ceiling = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** min(attempt - 1, 16))
    return (rng or random).uniform(0.0, ceiling)
