"""A stop asked for while the daemon is still starting (SIGTERM or SIGINT before its event loop owns the signals).

``rationad run`` spends its first second or two importing and reading its config; a supervisor's stop in that window
(systemd restarting a unit, Kubernetes deleting a pod, a test that finds its work already done) killed the process by
the signal's default action (exit -15, nothing logged). ``rationad.__main__`` calls ``hold`` for ``run`` before it
imports anything heavy (``cli.main`` too, for callers that enter there): the signal becomes a note, and ``Daemon.run``
reads it once it installs its own handlers: the daemon then stops without starting anything and exits 0."""

from __future__ import annotations

import signal

_received: list[int] = []


def hold() -> None:
    """Remember SIGTERM and SIGINT instead of dying of them (until the event loop installs its own handlers)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _remember)


def _remember(signum: int, frame: object) -> None:
    _received.append(signum)


def received() -> str | None:
    """The name of the first stop signal held, or None."""
    return signal.Signals(_received[0]).name if _received else None
