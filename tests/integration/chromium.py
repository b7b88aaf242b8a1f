"""Open a page in Debian's headless Chromium and inspect it over the DevTools protocol.

Used by the report tests: it loads a file:// page in a fresh profile, waits for
the load event, evaluates a JavaScript expression in the page, collects every
console error, exception and failed resource load, and saves a full-page
screenshot. The DevTools websocket is driven with aiohttp (a Ray dependency),
so no browser driver has to be installed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class PageResult:
    def __init__(self, value: Any, errors: list[str]) -> None:
        self.value, self.errors = value, errors


def inspect_page(url: str, expression: str, screenshot: str, timeout: float = 60) -> PageResult:
    """Load ``url``, evaluate ``expression`` (its JSON value is returned), save a full-page PNG."""
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium; `make setup` does it)")
    # Chromium's helper processes may still be writing the profile for a moment after the
    # browser exits: stop the whole process group, and never fail on the profile's cleanup.
    with tempfile.TemporaryDirectory(prefix="ganray-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the browser and its helpers
        )
        try:
            port = _devtools_port(profile, proc, timeout)
            return asyncio.run(_drive(port, url, expression, screenshot, timeout))
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """End the browser and every helper process it started (its process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)  # let helpers that saw the signal exit before the profile is removed


def _devtools_port(profile: str, proc: subprocess.Popen, timeout: float) -> int:
    path = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with status {proc.returncode} before DevTools was up")
        if os.path.exists(path):
            with open(path) as fh:
                lines = fh.read().split()
            if lines:
                return int(lines[0])
        time.sleep(0.1)
    raise RuntimeError("chromium did not open its DevTools port in time")


async def _drive(port: int, url: str, expression: str, screenshot: str, timeout: float) -> PageResult:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        async with http.ws_connect(ws_url, max_msg_size=0) as ws:
            cdp = _Session(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await cdp.call(f"{domain}.enable")
            await cdp.call("Page.navigate", url=url)
            await cdp.wait_event("Page.loadEventFired", timeout)
            value = await cdp.call(
                "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
            )
            metrics = await cdp.call("Page.getLayoutMetrics")
            size = metrics["cssContentSize"]
            shot = await cdp.call(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
            with open(screenshot, "wb") as fh:
                fh.write(base64.b64decode(shot["data"]))
            return PageResult(value.get("result", {}).get("value"), cdp.errors)


class _Session:
    """Minimal DevTools client: numbered calls, and events gathered while waiting."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id, self.events, self.errors = ws, 0, [], []

    def _note(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        self.events.append(method)
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
            )
        elif method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            self.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            self.errors.append(f"load failed: {p.get('errorText')}")

    async def _recv(self, timeout: float) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        return json.loads(msg.data)

    async def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = await self._recv(timeout)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._note(msg)

    async def wait_event(self, method: str, timeout: float) -> None:
        if method in self.events:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = await self._recv(max(0.1, deadline - time.time()))
            self._note(msg)
            if msg.get("method") == method:
                return
        raise TimeoutError(f"no {method} within {timeout} s")
