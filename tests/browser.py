"""A small driver for headless Chromium over the DevTools protocol, for browser tests.

Only aiohttp's websocket client is used (no Playwright, nothing to install but Debian's
``chromium``)::

    async with Chromium.launch() as browser:
        await browser.navigate("http://127.0.0.1:8080/console")
        await browser.wait_for("document.querySelector('#queue li') !== null")

Console messages, uncaught exceptions and browser log entries (CSP violations, failed
requests) are collected in :attr:`Chromium.console` and appended to every failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

_START_TIMEOUT_S = 20.0
_COMMAND_TIMEOUT_S = 30.0
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]


def chromium_path() -> str | None:
    """The ``chromium`` executable on PATH, or None when it is not installed."""
    return shutil.which("chromium")


class BrowserError(AssertionError):
    """A page-side failure: a script threw, or the browser could not do what was asked."""


class Chromium:
    """One headless Chromium with one page, driven over its DevTools websocket."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        profile: Path,
        session: aiohttp.ClientSession,
        socket: aiohttp.ClientWebSocketResponse,
    ) -> None:
        self.process = process
        self.profile = profile
        self.console: list[str] = []
        self._session = session
        self._socket = socket
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._reader = asyncio.create_task(self._read(), name="devtools-reader")

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, *, window: tuple[int, int] = (1280, 800)) -> AsyncIterator[Chromium]:
        """Start Chromium in a fresh profile; kill it and remove the profile on exit."""
        executable = chromium_path()
        if executable is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        profile = Path(tempfile.mkdtemp(prefix="lfr-chromium-"))
        log = (profile / "chromium.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            executable,
            *_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its own process group, so its helpers die with it
        )
        log.close()  # the child has its own copy
        session = aiohttp.ClientSession()
        browser: Chromium | None = None
        try:
            port = await _devtools_port(profile, process)
            socket = await session.ws_connect(await _page_socket_url(session, port), max_msg_size=0)
            browser = cls(process, profile, session, socket)
            await browser.send("Page.enable")
            await browser.send("Runtime.enable")
            await browser.send("Log.enable")
            # The window includes the browser's frame; make the page's viewport the size.
            await browser.send(
                "Emulation.setDeviceMetricsOverride",
                width=window[0],
                height=window[1],
                deviceScaleFactor=1,
                mobile=False,
            )
            yield browser
        finally:
            await session.close()  # closes the websocket; the reader then ends
            if browser is not None:
                await asyncio.wait({browser._reader}, timeout=5)
            await _kill(process)
            for _ in range(5):  # helpers that were just killed may still be writing in it
                shutil.rmtree(profile, ignore_errors=True)
                if not profile.exists():
                    break
                await asyncio.sleep(0.2)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (BrowserError on an error)."""
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self._socket.send_str(
            json.dumps({"id": self._next_id, "method": method, "params": params})
        )
        message = await asyncio.wait_for(future, _COMMAND_TIMEOUT_S)
        if "error" in message:
            raise BrowserError(f"{method} failed: {message['error']}{self.console_text()}")
        result: dict[str, Any] = message.get("result", {})
        return result

    async def navigate(self, url: str, timeout_s: float = 30.0) -> None:
        """Open ``url`` in the page and wait for its load event."""
        loaded = self._expect("Page.loadEventFired")
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url} failed: {result['errorText']}")
        await asyncio.wait_for(loaded, timeout_s)

    async def evaluate(self, expression: str, *, user_gesture: bool = False) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited).

        ``user_gesture``: run it as if the user had acted (a click may then open a tab).
        """
        result = await self.send(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
            userGesture=user_gesture,
        )
        details = result.get("exceptionDetails")
        if details is not None:
            raise BrowserError(f"{expression!r} threw: {_exception_text(details)}")
        return result.get("result", {}).get("value")

    async def wait_for(self, condition: str, timeout_s: float = 30.0) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value.

        Raises TimeoutError with its last value and the page's console messages.
        """
        deadline = time.monotonic() + timeout_s
        value: Any = None
        while True:
            value = await self.evaluate(condition)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"after {timeout_s:g} s, {condition!r} is still {value!r}{self.console_text()}"
                )
            await asyncio.sleep(0.1)

    async def click(self, selector: str) -> None:
        """Click the first element matching a CSS selector (BrowserError if none does), as
        the user would: with the user activation a click gives (a tab may open)."""
        await self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            f" if (!el) throw new Error('nothing matches ' + {json.dumps(selector)});"
            " el.click(); return true; })()",
            user_gesture=True,
        )

    async def screenshot(self, path: Path) -> Path:
        """Save the page's viewport as a PNG at ``path``."""
        result = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))
        return path

    def console_text(self) -> str:
        """The collected console messages, as an appendix for a failure message."""
        if not self.console:
            return "\n(no console messages)"
        return "\npage console:\n" + "\n".join(f"  {line}" for line in self.console)

    def _expect(self, event: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(event, []).append(future)
        return future

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            self._record(data.get("method", ""), data.get("params", {}))
            for future in self._waiters.pop(data.get("method", ""), []):
                if not future.done():
                    future.set_result(data.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    BrowserError(f"the DevTools connection closed{self.console_text()}")
                )

    def _record(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"console.{params.get('type')}: {args}")
        elif method == "Runtime.exceptionThrown":
            self.console.append(f"exception: {_exception_text(params['exceptionDetails'])}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            where = f" ({entry['url']})" if entry.get("url") else ""
            self.console.append(f"log.{entry.get('level')}: {entry.get('text')}{where}")


def _exception_text(details: dict[str, Any]) -> str:
    exception = details.get("exception") or {}
    return str(exception.get("description") or details.get("text") or details)


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            log = (profile / "chromium.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"chromium exited with {process.returncode}:\n{log}")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(marker.read_text().splitlines()[0])
        await asyncio.sleep(0.1)
    raise TimeoutError(f"chromium wrote no {marker} within {_START_TIMEOUT_S:g} s")


async def _page_socket_url(session: aiohttp.ClientSession, port: int) -> str:
    deadline = time.monotonic() + _START_TIMEOUT_S
    targets: Any = None
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
        pages = [t for t in targets or [] if t.get("type") == "page"]
        if pages:
            return str(pages[0]["webSocketDebuggerUrl"])
        if time.monotonic() >= deadline:
            raise TimeoutError(f"chromium has no page target: {targets}")
        await asyncio.sleep(0.1)


async def _kill(process: asyncio.subprocess.Process) -> None:
    # Chromium leads its own process group (start_new_session): end the browser and the
    # helpers it started, even if the browser itself has already exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 10)
