"""``python -m rationad`` and the ``rationad`` command.

``run`` holds SIGTERM and SIGINT (``stop_signals``) before the command line module and its config module are imported:
that import takes a second or more on a loaded machine, and a supervisor's stop in it killed the process by the
signal's default action (exit -15, nothing logged)."""

import sys

from rationad import stop_signals


def main() -> int:
    if sys.argv[1:2] == ["run"]:
        stop_signals.hold()
    from rationad.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
