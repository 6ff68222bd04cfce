"""The API's server closes a connection whose request line and headers never finish.

A real server (the runner ``lfr up`` uses) on loopback and raw sockets: one sends half a
request line, one trickles header bytes, one is idle; each must be closed by the server
within the header timeout plus a generous margin, while a normal request still works.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from lfr_actors.api.app import api_runner, create_app
from lfr_actors.store.alerts import AlertStore

TIMEOUT_S = 1.0
MARGIN_S = 10.0  # a noisy shared machine; the point is "closed", not "closed fast"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    db = tmp_path / "alerts.db"
    AlertStore(db).close()
    runner = api_runner(create_app(db), header_timeout_s=TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield host, port
    finally:
        await runner.cleanup()


def _closed_after(sock: socket.socket, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``sock`` (sending ``trickle`` byte by byte)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    sent = 0
    while time.monotonic() - started < TIMEOUT_S + MARGIN_S:
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except OSError:
                return time.monotonic() - started
            sent += 1
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
        if data == b"":
            return time.monotonic() - started
        raise AssertionError(f"the server answered an unfinished request: {data[:80]!r}")
    raise AssertionError(f"the connection was still open after {TIMEOUT_S + MARGIN_S} s")


async def test_a_partial_request_line_is_closed_within_the_timeout(
    server: tuple[str, int],
) -> None:
    with socket.create_connection(server) as sock:
        sock.sendall(b"GET /readyz HT")
        elapsed = await asyncio.to_thread(_closed_after, sock)
    assert elapsed >= TIMEOUT_S * 0.5  # closed by the timer, not at once


async def test_trickled_headers_do_not_keep_a_connection_open(server: tuple[str, int]) -> None:
    request = b"GET /readyz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    with socket.create_connection(server) as sock:
        await asyncio.to_thread(_closed_after, sock, request)


async def test_an_idle_connection_is_closed_and_a_real_request_works(
    server: tuple[str, int],
) -> None:
    with socket.create_connection(server) as sock:
        await asyncio.to_thread(_closed_after, sock)

    def get() -> bytes:
        with socket.create_connection(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            sock.settimeout(TIMEOUT_S + MARGIN_S)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks)

    answer = await asyncio.to_thread(get)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
