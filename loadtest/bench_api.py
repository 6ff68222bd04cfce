"""Alert API benchmark on loopback: live push to SSE clients, and request rates.

Starts the real API (``create_app`` behind ``web.AppRunner`` + ``TCPSite`` on 127.0.0.1,
port 0, ``access_log=None`` as the deployment runs it) over a fresh store in a temporary
directory, and measures:

- **Live push.** For 1, 50 and 200 concurrent SSE clients (one connection each, all
  connected, i.e. past the stream's ``retry:`` preamble, before the burst), a writer
  process (its own ``AlertStore`` writer connection and a ``Fuser``, as the alert actor
  has) applies a burst of alert events: one ``raised`` per entry, then ``updated`` rounds
  across all entries. Each event is stamped with the wall-clock time its commit returned.
  Per client count: ids lost (expected but not received, summed over clients), duplicated
  (received more than once), unexpected and out of order (all must be 0), and delivery
  latency (receive time - commit time) p50/p95/p99/max over all deliveries.
- **Resume.** Two clients disconnect mid-burst (the writer is paced so the burst lasts a few
  seconds) and reconnect, one with ``Last-Event-ID``, one with ``?after=``; each must end
  with every id of the burst exactly once.
- **Request rates.** ``GET /v1/alerts?limit=100`` and ``GET /v1/alerts/{id}`` with 8
  concurrent keep-alive clients for a few seconds each: requests/s and p50/p99 latency.
  Baseline in the same run: the same reads directly on the store
  (``AlertStore.open_readonly(...).list_alerts(limit=100)`` / ``.get(id)``, one
  connection, one thread, as the API has one read connection); ratio = API rate / direct.

Where things run. The server runs in a subprocess (this script with ``--serve``), so the
clients' parsing of ~100k SSE events does not share an event loop (or a GIL) with the
server and distort its timing; the writer is a second subprocess (``--write``), so its
commits are not paced by either. On a 2-core machine the three processes still share two
cores: figures are for this machine only, compare only same-run ratios. Both ways were
cheap enough to measure: the request rates, and one SSE scenario (50 clients), are also run
with the server in this process's event loop (``inprocess``), sharing one loop and one GIL
with the load generator; the main SSE figures are the subprocess server's.

Auth. When ``create_app`` accepts an ``auth`` keyword (bearer-token auth), the server is
built with ``auth=False``: the figures are delivery and request cost without auth overhead.
The report says which build was measured (``api.auth_keyword``).

All traffic goes to 127.0.0.1. Every loop has a count and a time limit; the temporary
directory and both subprocesses are removed at the end. About 1-2 minutes on 2 cores.

    python loadtest/bench_api.py [--entries 500] [--rounds 2] [--clients 1 50 200]
                                 [--http-seconds 3] [--http-concurrency 8]
                                 [--poll-interval 0.2] [--inprocess-sse-clients 50]
                                 [--no-inprocess]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import itertools
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web
from machine import machine  # loadtest/machine.py, beside this script

from lfr_actors.alerts.fusion import Fuser, FusionConfig
from lfr_actors.api.app import create_app
from lfr_actors.logs import configure as configure_logging
from lfr_actors.store.alerts import AlertStore
from lfr_actors.testing.doubles import make_sighting

# Log lines must not mix into the JSON report or the child processes' replies.
configure_logging(level="WARNING")

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
DEPLOYMENT = "bench"
SCENARIO_TIMEOUT_S = 60.0  # connect + burst + delivery, per scenario
CONNECT_TIMEOUT_S = 30.0
CHILD_START_TIMEOUT_S = 60.0
MAX_HTTP_REQUESTS = 500_000  # per measurement, besides its duration
MAX_DIRECT_CALLS = 2_000_000
MARK = "@bench-api "  # prefix of protocol lines on a child's stdout (logs may share it)
EXPECTED_LOG = ("api_auth_disabled",)  # we build the app with auth=False on purpose


# -- machine and numbers -------------------------------------------------------------


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_ms(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 50) * 1000, 2),
        "p95": round(percentile(ordered, 95) * 1000, 2),
        "p99": round(percentile(ordered, 99) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# -- the server (subprocess or in-process) ---------------------------------------------


def app_kwargs(poll_interval_s: float) -> tuple[dict[str, Any], bool]:
    """create_app's keywords; ``auth=False`` where this build has bearer-token auth."""
    kwargs: dict[str, Any] = {"poll_interval_s": poll_interval_s}
    has_auth = "auth" in inspect.signature(create_app).parameters
    if has_auth:
        kwargs["auth"] = False
    return kwargs, has_auth


async def start_server(store_path: Path, poll_interval_s: float) -> tuple[web.AppRunner, int, bool]:
    kwargs, has_auth = app_kwargs(poll_interval_s)
    runner = web.AppRunner(create_app(store_path, **kwargs), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, backlog=2048)
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, port, has_auth


async def serve(store_path: Path, poll_interval_s: float) -> None:
    """``--serve``: run the API until stdin closes; the first stdout line is the port."""
    runner, port, has_auth = await start_server(store_path, poll_interval_s)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    # A thread of its own: one blocked in the default executor would take a worker from
    # the API's asyncio.to_thread store reads.
    threading.Thread(target=wait_stdin, daemon=True).start()
    reply({"port": port, "auth_keyword": has_auth})
    await stop.wait()
    await runner.cleanup()


# -- the writer (subprocess) ---------------------------------------------------------


def reply(message: dict[str, Any]) -> None:
    """One protocol line to the parent (marked: the project's logs may go to stdout)."""
    print(MARK + json.dumps(message), flush=True)


def write_main(store_path: Path) -> None:
    """``--write``: the alert actor's side, driven by JSON lines on stdin.

    ``{"op": "prepare", "burst", "entries", "rounds", "pace_s"}`` builds the sightings
    (fake crops are JPEG-encoded here, not during the burst); ``{"op": "go"}`` observes
    and applies them as fast as the store commits (plus ``pace_s`` after each event) and
    answers ``{"events": [[event_id, kind, committed_at], ...], ...}``; ``{"op": "quit"}``.
    """
    store = AlertStore(store_path)
    prepared: dict[str, Any] = {}
    reply({"ready": True})
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            if cmd["op"] == "prepare":
                burst, entries, rounds = cmd["burst"], cmd["entries"], cmd["rounds"]
                rng = random.Random(burst)
                sightings = [
                    make_sighting(
                        burst * 1_000_000 + r * entries + i,
                        entry=f"b{burst}-e{i}",
                        camera=f"cam_{(i + r) % 8}",
                        at=r * 1.0,
                        distance=round(0.1 + 0.35 * rng.random(), 4),
                    )
                    for r in range(rounds)
                    for i in range(entries)
                ]
                prepared = {"sightings": sightings, "pace_s": float(cmd.get("pace_s", 0.0))}
                reply({"prepared": len(sightings)})
            elif cmd["op"] == "go":
                fuser = Fuser(DEPLOYMENT, FusionConfig(threshold=0.5, fusion_window_s=3600.0))
                pace_s = prepared["pace_s"]
                out: list[tuple[int, str, float]] = []
                started = time.time()
                for sighting in prepared["sightings"]:
                    event = fuser.observe(sighting)
                    if event is None:
                        continue
                    event_id = store.apply(event)
                    out.append((event_id, event.kind, time.time()))
                    if pace_s:
                        time.sleep(pace_s)
                ended = time.time()
                reply({"events": out, "started": started, "ended": ended})
    finally:
        store.close()


class Child:
    """A subprocess of this script speaking JSON lines; stderr goes to a log file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.other_stdout: list[str] = []
        self._log: IO[bytes] = log_path.open("wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=REPO,
        )

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        data = (json.dumps(message) + "\n").encode()
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    async def receive(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        for _ in range(10_000):
            remaining = max(0.1, deadline - time.monotonic())
            raw = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), remaining)
            if not raw:
                raise RuntimeError(f"child exited ({self.proc.poll()}); see {self.log_path.name}")
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(MARK):
                result: dict[str, Any] = json.loads(line[len(MARK) :])
                return result
            self.other_stdout.append(line[:300])  # a log line, not a reply
        raise RuntimeError("child wrote 10000 lines without a reply")

    def stop(self, timeout_s: float = 10.0) -> int | None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def log_problems(self) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        keys = ("error", "traceback", "exception", "warning")
        return [
            line[:300]
            for line in [*self.other_stdout, *text.splitlines()]
            if any(k in line.lower() for k in keys) and not any(e in line for e in EXPECTED_LOG)
        ]


# -- SSE clients ---------------------------------------------------------------------


@dataclass
class SseClient:
    """What one SSE client saw: event ids with their receive (wall) times."""

    name: str
    received: list[tuple[int, float]] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    max_id: int = 0
    connections: int = 0
    disconnected_at: float | None = None
    error: str | None = None


async def read_stream(
    session: aiohttp.ClientSession,
    url: str,
    client: SseClient,
    *,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
) -> None:
    """Read one SSE connection; with ``stop_after``, drop it after that many events."""
    resp = await session.get(url, headers=headers)
    try:
        if resp.status != 200:
            raise RuntimeError(f"stream answered {resp.status}: {(await resp.text())[:200]}")
        client.connections += 1
        buffer = b""
        async for chunk in resp.content.iter_any():
            now = time.time()
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                for line in block.split(b"\n"):
                    if line.startswith(b"id:"):
                        event_id = int(line[3:].strip())
                        client.received.append((event_id, now))
                        client.max_id = max(client.max_id, event_id)
                    elif line.startswith(b"retry:"):
                        client.connected.set()
            if stop_after is not None and len(client.received) >= stop_after:
                return  # a partial event left in the buffer is dropped, as on a real cut
    finally:
        resp.close()  # closes the connection (an unfinished stream is not reused)


async def resuming_client(
    session: aiohttp.ClientSession,
    url: str,
    client: SseClient,
    *,
    mode: str,
    disconnect_after: int,
    pause_s: float,
) -> None:
    await read_stream(session, url, client, stop_after=disconnect_after)
    client.disconnected_at = time.time()
    await asyncio.sleep(pause_s)
    last = client.received[-1][0]
    if mode == "last_event_id":
        await read_stream(session, url, client, headers={"Last-Event-ID": str(last)})
    else:
        await read_stream(session, f"{url}?after={last}", client)


async def guarded(client: SseClient, coro: Any) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        client.error = f"{type(exc).__name__}: {exc}"[:300]
        client.connected.set()  # do not hold up the start of the burst


def delivery_figures(
    clients: list[SseClient], events: list[tuple[int, str, float]]
) -> dict[str, Any]:
    committed = {event_id: at for event_id, _, at in events}
    expected = set(committed)
    lost = duplicated = unexpected = out_of_order = 0
    latencies: list[float] = []
    for client in clients:
        counts = Counter(event_id for event_id, _ in client.received)
        lost += len(expected - counts.keys())
        duplicated += sum(n - 1 for n in counts.values() if n > 1)
        unexpected += sum(n for event_id, n in counts.items() if event_id not in expected)
        previous = 0
        for event_id, received_at in client.received:
            if event_id <= previous:
                out_of_order += 1
            previous = max(previous, event_id)
            if event_id in committed:
                latencies.append(received_at - committed[event_id])
    return {
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "out_of_order": out_of_order,
        "deliveries": len(latencies),
        "expected_deliveries": len(expected) * len(clients),
        "latency_ms": latency_ms(latencies),
    }


@dataclass
class Bench:
    port: int
    server_pid: int | None  # None: the server runs in this process
    writer: Child
    bursts: int = 0

    @property
    def stream_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1/alerts/stream"

    async def burst(
        self,
        session: aiohttp.ClientSession,
        *,
        clients: int,
        entries: int,
        rounds: int,
        pace_s: float = 0.0,
        resume: bool = False,
    ) -> dict[str, Any]:
        self.bursts += 1
        await self.writer.send(
            {
                "op": "prepare",
                "burst": self.bursts,
                "entries": entries,
                "rounds": rounds,
                "pace_s": pace_s,
            }
        )
        total = (await self.writer.receive(CHILD_START_TIMEOUT_S))["prepared"]
        deadline = time.monotonic() + SCENARIO_TIMEOUT_S
        sse = [SseClient(f"c{i}") for i in range(clients)]
        tasks = []
        for i, client in enumerate(sse):
            if resume:
                mode = "last_event_id" if i % 2 == 0 else "after"
                client.name = f"resume_{mode}"
                coro = resuming_client(
                    session,
                    self.stream_url,
                    client,
                    mode=mode,
                    disconnect_after=max(1, total // 3),
                    pause_s=0.5,
                )
            else:
                coro = read_stream(session, self.stream_url, client)
            tasks.append(asyncio.create_task(guarded(client, coro)))
        cpu0 = None if self.server_pid is None else process_cpu_s(self.server_pid)
        own0 = time.process_time()
        try:
            connect_start = time.perf_counter()
            await asyncio.wait_for(
                asyncio.gather(*(c.connected.wait() for c in sse)), CONNECT_TIMEOUT_S
            )
            connect_s = time.perf_counter() - connect_start
            errors = [c.error for c in sse if c.error]
            if errors:
                raise RuntimeError(f"{len(errors)} clients failed to connect: {errors[0]}")
            await self.writer.send({"op": "go"})
            done = await self.writer.receive(max(1.0, deadline - time.monotonic()))
            events = [(int(e[0]), str(e[1]), float(e[2])) for e in done["events"]]
            last_id = max(e[0] for e in events)
            while time.monotonic() < deadline and not all(
                c.max_id >= last_id or c.error for c in sse
            ):
                await asyncio.sleep(0.01)
            complete_at = max(
                (t for c in sse for eid, t in c.received if eid == last_id), default=math.nan
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        cpu1 = None if self.server_pid is None else process_cpu_s(self.server_pid)
        own_cpu = time.process_time() - own0
        kinds = Counter(kind for _, kind, _ in events)
        result: dict[str, Any] = {
            "clients": clients,
            "events": len(events),
            "raised": kinds["raised"],
            "updated": kinds["updated"],
            "connect_all_s": round(connect_s, 3),
            "burst_s": round(done["ended"] - done["started"], 3),
            "writer_events_per_s": round(len(events) / (done["ended"] - done["started"]), 1),
            "last_delivered_after_burst_s": round(complete_at - done["ended"], 3),
            **delivery_figures(sse, events),
            "client_errors": [c.error for c in sse if c.error][:5],
            "server_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2),
            "this_process_cpu_s": round(own_cpu, 2),
        }
        if resume:
            result["resumers"] = [
                {
                    "client": c.name,
                    "connections": c.connections,
                    "disconnected_mid_burst": c.disconnected_at is not None
                    and c.disconnected_at < done["ended"],
                    **{k: v for k, v in delivery_figures([c], events).items() if k != "latency_ms"},
                }
                for c in sse
            ]
        return result


# -- request rates -------------------------------------------------------------------


async def http_rate(
    session: aiohttp.ClientSession,
    url_for: Callable[[int], str],
    *,
    concurrency: int,
    duration_s: float,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Requests/s and latency of ``concurrency`` keep-alive clients for ``duration_s``."""
    counter = itertools.count()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def worker(stop_at: float, record: bool) -> None:
        while time.perf_counter() < stop_at and len(latencies) < MAX_HTTP_REQUESTS:
            start = time.perf_counter()
            async with session.get(url_for(next(counter))) as resp:
                await resp.read()
                status = resp.status
            if record:
                latencies.append(time.perf_counter() - start)
                statuses[status] += 1

    warm_until = time.perf_counter() + min(0.5, duration_s / 4)
    await asyncio.gather(*(worker(warm_until, False) for _ in range(concurrency)))
    cpu0 = None if server_pid is None else process_cpu_s(server_pid)
    own0 = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(worker(start + duration_s, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    own_cpu = time.process_time() - own0
    cpu1 = None if server_pid is None else process_cpu_s(server_pid)
    return {
        "requests": len(latencies),
        "per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": latency_ms(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2),
        "this_process_cpu_s": round(own_cpu, 2),
        "seconds": round(elapsed, 2),
    }


def direct_rate(call: Callable[[int], object], duration_s: float) -> dict[str, Any]:
    """The baseline: the same read called directly, one thread, for ``duration_s``."""
    for i in range(20):
        call(i)
    latencies: list[float] = []
    start = time.perf_counter()
    stop_at = start + duration_s
    for i in range(MAX_DIRECT_CALLS):
        t0 = time.perf_counter()
        call(i)
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        if t1 >= stop_at:
            break
    elapsed = time.perf_counter() - start
    return {
        "calls": len(latencies),
        "per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": latency_ms(latencies),
        "seconds": round(elapsed, 2),
    }


async def request_rates(
    port: int,
    alert_ids: list[str],
    *,
    concurrency: int,
    duration_s: float,
    server_pid: int | None,
) -> dict[str, Any]:
    base = f"http://{HOST}:{port}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        listing = await http_rate(
            session,
            lambda _: f"{base}/v1/alerts?limit=100",
            concurrency=concurrency,
            duration_s=duration_s,
            server_pid=server_pid,
        )
        one = await http_rate(
            session,
            lambda i: f"{base}/v1/alerts/{alert_ids[i % len(alert_ids)]}",
            concurrency=concurrency,
            duration_s=duration_s,
            server_pid=server_pid,
        )
    return {"list_limit_100": listing, "get_by_id": one}


# -- main ----------------------------------------------------------------------------


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    store_path = tmp / "alerts.db"
    AlertStore(store_path).close()  # create and migrate before any reader opens it
    server = Child(
        ["--serve", str(store_path), "--poll-interval", str(args.poll_interval)],
        tmp / "server.log",
    )
    writer = Child(["--write", str(store_path)], tmp / "writer.log")
    report: dict[str, Any] = {}
    try:
        hello = await server.receive(CHILD_START_TIMEOUT_S)
        await writer.receive(CHILD_START_TIMEOUT_S)
        bench = Bench(int(hello["port"]), server.proc.pid, writer)
        report["api"] = {
            "server": "subprocess (aiohttp AppRunner + TCPSite, 127.0.0.1, access_log=None)",
            "writer": "subprocess (own AlertStore writer connection + Fuser)",
            "auth_keyword": hello["auth_keyword"],
            "auth": "disabled: create_app(auth=False), delivery measured without auth overhead"
            if hello["auth_keyword"]
            else "this build's create_app has no auth keyword",
            "poll_interval_s": args.poll_interval,
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)
        connector = aiohttp.TCPConnector(limit=0)
        sse: dict[str, Any] = {}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for n in args.clients:
                sse[f"clients_{n}"] = await bench.burst(
                    session, clients=n, entries=args.entries, rounds=args.rounds
                )
            sse["resume"] = await bench.burst(
                session,
                clients=2,
                entries=args.entries,
                rounds=args.rounds,
                pace_s=args.resume_pace_ms / 1000,
                resume=True,
            )
            if args.inprocess_sse_clients:
                # The same scenario with the server in this process's event loop, sharing
                # it (and the GIL) with the clients' parsing.
                runner, port, _ = await start_server(store_path, args.poll_interval)
                try:
                    inproc = Bench(port, None, writer, bench.bursts)
                    sse[f"inprocess_clients_{args.inprocess_sse_clients}"] = await inproc.burst(
                        session,
                        clients=args.inprocess_sse_clients,
                        entries=args.entries,
                        rounds=args.rounds,
                    )
                    bench.bursts = inproc.bursts
                finally:
                    await runner.cleanup()
        report["sse"] = sse

        with AlertStore.open_readonly(store_path, create=False) as direct:
            alert_ids = [row["id"] for row in direct.list_alerts(limit=10_000).alerts]
            random.Random(0).shuffle(alert_ids)
            report["store"] = direct.counts()
            api = await request_rates(
                bench.port,
                alert_ids,
                concurrency=args.http_concurrency,
                duration_s=args.http_seconds,
                server_pid=server.proc.pid,
            )
            baseline = {
                "list_limit_100": direct_rate(
                    lambda _: direct.list_alerts(limit=100), args.http_seconds
                ),
                "get_by_id": direct_rate(
                    lambda i: direct.get(alert_ids[i % len(alert_ids)]), args.http_seconds
                ),
            }
        rates: dict[str, Any] = {
            "concurrency": args.http_concurrency,
            "direct_store_baseline": baseline,
            "api_subprocess": api,
        }
        if args.inprocess:
            runner, port, _ = await start_server(store_path, args.poll_interval)
            try:
                rates["api_inprocess"] = await request_rates(
                    port,
                    alert_ids,
                    concurrency=args.http_concurrency,
                    duration_s=args.http_seconds,
                    server_pid=None,
                )
            finally:
                await runner.cleanup()
        ratios: dict[str, Any] = {}
        for name in ("list_limit_100", "get_by_id"):
            base = baseline[name]["per_s"]
            ratios[f"{name}_api_subprocess_vs_direct"] = ratio(api[name]["per_s"], base)
            if "api_inprocess" in rates:
                inproc = rates["api_inprocess"][name]["per_s"]
                ratios[f"{name}_api_inprocess_vs_direct"] = ratio(inproc, base)
                ratios[f"{name}_inprocess_vs_subprocess"] = ratio(inproc, api[name]["per_s"])
        rates["ratios"] = ratios
        report["request_rates"] = rates
    finally:
        with contextlib.suppress(Exception):
            await writer.send({"op": "quit"})
        report["children"] = {
            "writer_exit": writer.stop(),
            "server_exit": server.stop(),
            "server_log_problems": server.log_problems()[:10],
            "writer_log_problems": writer.log_problems()[:10],
        }
    return report


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    problems = []
    for name, row in report.get("sse", {}).items():
        if not isinstance(row, dict):
            continue
        for key in ("lost", "duplicated", "unexpected", "out_of_order"):
            if row.get(key):
                problems.append(f"sse.{name}.{key} = {row[key]}")
        if row.get("client_errors"):
            problems.append(f"sse.{name}.client_errors: {row['client_errors'][0]}")
        for resumer in row.get("resumers", []):
            if resumer["lost"] or resumer["duplicated"] or resumer["connections"] != 2:
                problems.append(f"sse.{name}.{resumer['client']}: {resumer}")
    children = report.get("children", {})
    if children.get("server_log_problems"):
        problems.append("server log has errors or warnings")
    for name, rates in report.get("request_rates", {}).items():
        if name.startswith("api_"):
            for endpoint, row in rates.items():
                if set(row["statuses"]) != {"200"}:
                    problems.append(f"{name}.{endpoint} statuses {row['statuses']}")
    return {"ok": not problems, "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500, help="alerts raised per burst")
    parser.add_argument(
        "--rounds", type=int, default=2, help="sightings per entry (1 raise + rounds-1 updates)"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--resume-pace-ms", type=float, default=2.0)
    parser.add_argument("--http-seconds", type=float, default=3.0)
    parser.add_argument("--http-concurrency", type=int, default=8)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument(
        "--inprocess-sse-clients",
        type=int,
        default=50,
        help="also run this many SSE clients against an in-process server (0: skip)",
    )
    parser.add_argument(
        "--no-inprocess",
        dest="inprocess",
        action="store_false",
        help="skip the in-process request-rate runs",
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve, args.poll_interval))
        return 0
    if args.write is not None:
        write_main(args.write)
        return 0
    if (
        args.entries < 1
        or args.rounds < 1
        or not all(1 <= n <= 1000 for n in [*args.clients, args.inprocess_sse_clients or 1])
    ):
        parser.error("entries and rounds must be ≥ 1, clients 1..1000")
    started = time.perf_counter()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lfr-bench-api-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    report: dict[str, Any] = {
        "machine": machine(
            aiohttp=aiohttp.__version__,
            sqlite=sqlite3.sqlite_version,
            load_average_1m_before=round(load0, 2),
            load_average_1m_after=round(os.getloadavg()[0], 2),
        ),
        "burst": {
            "entries": args.entries,
            "rounds": args.rounds,
            "events_per_burst": args.entries * args.rounds,
            "latency": "receive wall time in the client process - wall time after the "
            "writer's commit returned",
        },
        **figures,
        "total_s": round(time.perf_counter() - started, 1),
    }
    report["verdict"] = verdict(report)
    print(json.dumps(report, indent=2))
    return 0 if report["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
