"""systemd notification (``Type=notify``): READY, WATCHDOG from the main loop, STOPPING. No-ops without NOTIFY_SOCKET."""

from __future__ import annotations

import os
import time

import sdnotify


MAX_STATUS_CHARS = 300


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._n = sdnotify.SystemdNotifier() if self.enabled else None
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval = int(usec) / 2e6 if usec and usec.isdigit() else None
        self._last_ping = 0.0

    def _send(self, msg: str) -> None:
        if self._n is not None:
            self._n.notify(msg)

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, text: str) -> None:
        """``STATUS=`` on one line, at most ``MAX_STATUS_CHARS``: ``text`` may carry a model server's error body, and a
        newline in it would start another assignment (``READY=1``, ``MAINPID=``) that systemd takes from us."""
        self._send(f"STATUS={' '.join(text.split())[:MAX_STATUS_CHARS]}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """Called from the main loop; pings at half the watchdog interval (every second when none is set)."""
        now = time.monotonic()
        if now - self._last_ping >= (self.watchdog_interval or 1.0):
            self._last_ping = now
            self._send("WATCHDOG=1")
