"""Debian's headless Chromium driven over the DevTools protocol, standard library only: the browser tests
use it to click, type, press keys, read the page and take screenshots as a user would.

Transport: `--remote-debugging-pipe`. Chromium reads protocol messages from its file descriptor 3 and writes
its answers to descriptor 4, each message one JSON object ended by a NUL byte (Chromium sources:
components/devtools/devtools_pipe/devtools_pipe.h `kReadFD = 3`, `kWriteFD = 4`, and
content/browser/devtools/devtools_pipe_handler.cc). A pipe needs no port, no websocket client and nothing
listening on the network. Flags as established in ../shared/FACTS.md ("Browser tests"). Commands:
https://chromedevtools.github.io/devtools-protocol/ (Target, Page, Runtime, Input domains).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


class BrowserError(RuntimeError):
    pass


class HeadlessChromium:
    """One Chromium process with an empty profile, attached to its first page. Use as a context manager."""

    def __init__(self, binary: str, profile_dir: Path, width: int = 1200, height: int = 900, timeout: float = 60):
        self.binary, self.profile_dir, self.timeout = binary, Path(profile_dir), timeout
        self.size = (width, height)
        self.process: subprocess.Popen | None = None
        self.session: str | None = None
        self._next_id = 0
        self._buffer = b""

    # -- process -----------------------------------------------------------------------------------------
    def __enter__(self) -> "HeadlessChromium":
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Copies numbered 10 and up, so `3<&N 4>&M` cannot overwrite one with the other; bash, as dash's
        # redirections take one digit only.
        read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        command = [self.binary, *FLAGS, f"--user-data-dir={self.profile_dir}", "--remote-debugging-pipe",
                   f"--window-size={self.size[0]},{self.size[1]}", "about:blank"]
        try:
            with open(self.profile_dir / "chromium.log", "wb") as log:
                self.process = subprocess.Popen(
                    ["bash", "-c", f'exec "$0" "$@" 3<&{read_end} 4>&{write_end} {read_end}<&- {write_end}>&-',
                     *command],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(read_end, write_end))
        finally:
            os.close(read_end)
            os.close(write_end)
        try:
            page = next(t for t in self.call("Target.getTargets", browser=True)["targetInfos"] if t["type"] == "page")
            self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                     browser=True)["sessionId"]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.call("Browser.close", browser=True, timeout=10)
            except (BrowserError, OSError):
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass

    def log_tail(self) -> str:
        path = self.profile_dir / "chromium.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    # -- protocol ----------------------------------------------------------------------------------------
    def call(self, method: str, params: dict | None = None, browser: bool = False,
             timeout: float | None = None) -> dict[str, Any]:
        """Send one command (to the page's session unless `browser`) and return its result; events are skipped."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser:
            message["sessionId"] = self.session
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"Chromium is gone; its log ends:\n{self.log_tail()}") from None
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer["result"]

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError(f"no answer from Chromium in time; its log ends:\n{self.log_tail()}")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError(f"Chromium closed the pipe; its log ends:\n{self.log_tail()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    # -- what a user does --------------------------------------------------------------------------------
    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"still false after {timeout or self.timeout} s: {expression}")
            time.sleep(0.1)

    def open(self, url: str) -> None:
        answer = self.call("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"{url}: {answer['errorText']}")
        self.wait_for("document.readyState === 'complete'")

    def click(self, selector: str) -> None:
        """A left click in the middle of the first element matching `selector`."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 0 if kind == "mouseMoved" else 1})

    def type_text(self, text: str) -> None:
        """Type into the focused element, as an input method would."""
        self.call("Input.insertText", {"text": text})

    def press_enter(self) -> None:
        # keyDown with text "\r" also sends the character, which is what submits a form (implicit submission)
        self.call("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Enter", "code": "Enter",
                                             "windowsVirtualKeyCode": 13, "text": "\r"})
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Enter", "code": "Enter",
                                             "windowsVirtualKeyCode": 13})

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
