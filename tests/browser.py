"""Headless Chromium for tests, driven through the DevTools protocol over a pipe
(`--remote-debugging-pipe`: NUL-separated JSON on file descriptors 3 and 4; no websocket
library needed). Opens a page and waits for a condition evaluated in it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
HEADLESS_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)


def find_chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless Chromium process with a fresh profile, stopped on exit."""

    def __init__(self, executable: str):
        self.executable = executable
        self.profile = Path(tempfile.mkdtemp(prefix="lungsrad_chromium_"))
        self.process: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self._buffer = b""
        self.session: str | None = None

    def __enter__(self) -> Browser:
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()

        def child_fds() -> None:
            # Chromium reads commands on fd 3 and writes replies on fd 4.
            command_fd = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            reply_fd = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(command_fd, 3)
            os.dup2(reply_fd, 4)

        self.process = subprocess.Popen(
            [
                self.executable,
                *HEADLESS_FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=child_fds,  # noqa: PLW1509 (the test process holds no lock here)
            start_new_session=True,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._write = os.fdopen(to_browser_write, "wb", buffering=0)
        self._read = from_browser_read
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._write.close()
        os.close(self._read)
        shutil.rmtree(self.profile, ignore_errors=True)

    def command(
        self, method: str, params: dict[str, Any] | None = None, *, timeout_s: float = 60
    ) -> Any:
        """Sends one DevTools command (to the attached page once `open` ran) and returns its
        result; events in between are skipped."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        self._write.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Chromium did not answer")
            ready, _, _ = select.select([self._read], [], [], remaining)
            if ready:
                chunk = os.read(self._read, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium exited")
                self._buffer += chunk
        text, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(text)

    def open(self, url: str) -> None:
        """Opens `url` in a new page and attaches to it."""
        target = self.command("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.command("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.command("Page.enable")
        self.command("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.command(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )["result"]
        return result.get("value")

    def wait_for(self, expression: str, *, timeout_s: float) -> Any:
        """Evaluates `expression` until it is truthy; returns its value (TimeoutError after
        `timeout_s`, a limit for a broken page, not a timing assumption)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied: {expression}")
            time.sleep(0.25)
