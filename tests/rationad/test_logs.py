"""structlog set-up (``rationad.logs``)."""

from __future__ import annotations

import structlog

from rationad.logs import configure


def test_terminal_escapes_in_logged_values_reach_a_console_as_text(capsys):
    """Found by review, failing before its fix: the console renderer printed string values raw, and log-derived
    values are logged (a session key of a hostile line, a template): cursor-up, erase-line and window-title
    sequences acted on the operator's terminal (wiping or forging the line above). A traceback keeps its lines."""
    configure("info", "console")
    try:
        log = structlog.get_logger("rationad.test")
        log.warning("late line", key="bob\x1b[1A\x1b[2K\x1b]0;all-clear\x07", n=3)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
    assert "\x1b[1A" not in err and "\x1b]0;" not in err and "\x07" not in err, repr(err)
    assert "bob\\x1b[1A\\x1b[2K\\x1b]0;all-clear\\x07" in err, repr(err)
    assert "Traceback (most recent call last):\n" in err and "ValueError: boom" in err


def test_bidi_controls_and_line_separators_in_logged_values_reach_a_console_as_text(capsys):
    """Found by review (2026-12-07), failing before its fix: the console renderer escaped C0 and C1 only, so a session
    key with a right-to-left override or a Unicode line separator (a JSON field, a generic key regex) reordered or
    broke the operator's line, as ``rationad tail`` already prevents."""
    configure("info", "console")
    try:
        structlog.get_logger("rationad.test").warning("late line", key="blk_1\u202e\u2066txt.exe\u2028ANOMALOUS\u200f")
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
    assert not any(c in err for c in "\u202e\u2066\u2028\u200f"), repr(err)  # (marks too: review 2026-12-07)
    assert "blk_1\\u202e\\u2066txt.exe\\u2028ANOMALOUS\\u200f" in err, repr(err)
