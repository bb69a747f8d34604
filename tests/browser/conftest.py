"""Headless Chromium for the browser tests, driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` makes Chromium read DevTools commands from fd 3 and write answers and events to fd 4,
each message a JSON object ended by a NUL byte: no WebSocket library, no WebDriver, nothing downloaded. Debian's
``chromium`` package is all it needs; without ``/usr/bin/chromium`` every browser test is skipped.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
    # Offline by construction: every name but loopback fails to resolve at once (no DNS wait), as on a laptop
    # with no network or behind a blocker; the tests' servers are reached by IP.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
WINDOW = (900, 900)


class CDPError(RuntimeError):
    """A DevTools command answered with an error, or timed out."""


class Chromium:
    """One headless Chromium process and its DevTools pipe."""

    def __init__(self, binary: Path = CHROMIUM) -> None:
        self._profile = tempfile.mkdtemp(prefix="chromium-test-")
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # Chromium's ends, moved to fds >= 10 so that bash can put them on 3 and 4 without clobbering either.
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_r, from_w))
        for fd in (to_r, from_w):
            os.close(fd)
        self._log = open(Path(self._profile) / "chromium.log", "wb")  # noqa: SIM115
        self._proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-',
             str(binary), *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, pass_fds=(child_r, child_w),
            start_new_session=True,
        )
        os.close(child_r)
        os.close(child_w)
        self._out = to_w
        self._in = from_r
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._answers: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._next_id = 0
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()
        try:
            self.version = self.send("Browser.getVersion", timeout=30)["product"]
        except CDPError:
            self.close()
            raise

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._in, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._cond:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self._events.append(message)
                self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 15) -> dict[str, Any]:
        """Send one command and wait for its answer's result."""
        with self._cond:
            self._next_id += 1
            msg_id = self._next_id
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        try:
            with self._write_lock:
                os.write(self._out, json.dumps(message).encode() + b"\0")
        except OSError as exc:  # the browser exited (see chromium.log in its profile)
            raise CDPError(f"{method}: browser gone ({exc})") from exc
        deadline = time.monotonic() + timeout
        with self._cond:
            while msg_id not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CDPError(f"{method}: no answer ({'browser gone' if self._closed else 'timeout'})")
                self._cond.wait(left)
            answer = self._answers.pop(msg_id)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error'].get('message')}")
        return dict(answer.get("result", {}))

    def mark(self) -> int:
        """A position in the event log: ``wait_event(since=mark)`` sees only later events."""
        with self._cond:
            return len(self._events)

    def events(self, method: str, *, session: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """The params of every event ``method`` received since ``since`` (for one session, if given)."""
        with self._cond:
            found = self._events[since:]
        return [e.get("params", {}) for e in found
                if e.get("method") == method and (session is None or e.get("sessionId") == session)]

    def wait_event(self, method: str, *, session: str | None = None, since: int = 0,
                   where: Callable[[dict[str, Any]], bool] = lambda _: True, timeout: float = 15) -> dict[str, Any]:
        """Wait for an event ``method`` (after ``since``) whose params satisfy ``where``; returns its params."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self._events[since:]:
                    if (event.get("method") == method and (session is None or event.get("sessionId") == session)
                            and where(event.get("params", {}))):
                        return dict(event.get("params", {}))
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CDPError(f"no {method} event within {timeout}s")
                self._cond.wait(left)

    def new_page(self) -> Page:
        """A tab in a fresh browser context (no cookies, cache or credentials shared with other tests)."""
        return Page(self)

    def close(self) -> None:
        """Close the browser (politely, then by force) and remove its profile."""
        try:
            self.send("Browser.close", timeout=5)
        except CDPError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        self._reader.join(timeout=5)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)


class Page:
    """One tab, attached with a flat DevTools session."""

    def __init__(self, browser: Chromium) -> None:
        self.browser = browser
        self._context = browser.send("Target.createBrowserContext")["browserContextId"]
        self._target = browser.send("Target.createTarget",
                                    {"url": "about:blank", "browserContextId": self._context})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": self._target, "flatten": True})["sessionId"]
        self._since = browser.mark()
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 15) -> dict[str, Any]:
        """A DevTools command in this tab's session."""
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def set_headers(self, headers: dict[str, str]) -> None:
        """Headers added to every request this tab makes (pages, XHR, static files)."""
        self.send("Network.setExtraHTTPHeaders", {"headers": headers})

    def goto(self, url: str, *, timeout: float = 15) -> int:
        """Open ``url``, wait for its load event; returns the document's HTTP status.

        A 401 asking for basic auth counts as an answer (headless Chromium cancels the login prompt and shows
        its own error page); a navigation that got no HTTP answer at all raises.
        """
        mark = self.browser.mark()
        nav = self.send("Page.navigate", {"url": url})
        if nav.get("errorText") and not self.browser.events("Network.responseReceived", session=self.session,
                                                            since=mark):
            raise CDPError(f"navigating to {url}: {nav['errorText']}")
        self.browser.wait_event("Page.loadEventFired", session=self.session, since=mark, timeout=timeout)
        return self._document_status(nav.get("loaderId"), mark)

    def click_and_wait_for_load(self, selector: str, *, timeout: float = 15) -> int:
        """Click ``selector`` (which navigates, e.g. a form's submit button); returns the new document's status."""
        mark = self.browser.mark()
        self.click(selector)
        self.browser.wait_event("Page.loadEventFired", session=self.session, since=mark, timeout=timeout)
        return self._document_status(None, mark)

    def _document_status(self, loader_id: str | None, since: int) -> int:
        responses = [e for e in self.browser.events("Network.responseReceived", session=self.session, since=since)
                     if e.get("type") == "Document" and (loader_id is None or e.get("loaderId") == loader_id)]
        if not responses:
            raise CDPError("no document response seen")
        return int(responses[-1]["response"]["status"])

    def js(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page (promises awaited); returns its JSON value."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 10) -> Any:
        """Poll ``expression`` until it is truthy; returns that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"still falsy after {timeout}s: {expression}")
            time.sleep(0.05)

    def text(self, selector: str) -> str:
        """The visible text of the first element matching ``selector`` ('' if none)."""
        return str(self.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")).strip()

    def visible(self, selector: str) -> bool:
        """Whether ``selector`` matches an element that is rendered with a non-empty box."""
        return bool(self.js(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)}); if (!el) return false;"
            " const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0"
            " && getComputedStyle(el).visibility !== 'hidden'; })()"
        ))

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the element, scrolled into view."""
        box = self.js(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)}); if (!el) return null;"
            " el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
            " return r.width > 0 && r.height > 0 ? {x: r.x + r.width / 2, y: r.y + r.height / 2} : null; })()"
        )
        if not box:
            raise AssertionError(f"nothing visible to click at {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent",
                      {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1})

    def uncaught_errors(self) -> list[str]:
        """Uncaught JavaScript exceptions thrown in this tab so far."""
        return [str(e.get("exceptionDetails", {}).get("exception", {}).get("description")
                    or e.get("exceptionDetails", {}).get("text"))
                for e in self.browser.events("Runtime.exceptionThrown", session=self.session, since=self._since)]

    def screenshot(self, path: str | Path) -> Path:
        """Save a PNG of the viewport."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        target = Path(path)
        target.write_bytes(base64.b64decode(data))
        return target

    def close(self) -> None:
        """Close the tab and its browser context."""
        try:
            self.browser.send("Target.closeTarget", {"targetId": self._target})
            self.browser.send("Target.disposeBrowserContext", {"browserContextId": self._context})
        except CDPError:
            pass


@pytest.fixture(scope="package")
def chromium() -> Iterator[Chromium]:
    """One headless Chromium for the browser tests (skips the test when Chromium is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    browser = Chromium()
    yield browser
    browser.close()


@pytest.fixture
def page(chromium: Chromium) -> Iterator[Page]:
    """A fresh tab in its own browser context."""
    tab = chromium.new_page()
    yield tab
    tab.close()
