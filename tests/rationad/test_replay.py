"""Replay windows a file through the daemon's Sessionizer; its clock is the file's own event time."""

from __future__ import annotations

import io

import orjson
import pytest

from rationad import replay
from rationad.config import InputConfig, ModelConfig, SessionsConfig


def _hdfs(day_secs: int, block: str, text: str) -> str:
    h, m, s = day_secs // 3600, day_secs // 60 % 60, day_secs % 60
    return f"081109 {h:02d}{m:02d}{s:02d} 148 INFO dfs.DataNode: {text} {block}"


def test_replay_sessions_are_not_cut_by_the_wall_clock_bound(tmp_path):
    # Replay's "now" is the newest event time of the file, not a wall clock: hours of a block's life pass in
    # milliseconds. sessions.max_open_secs (set explicitly, and in the shipped config.toml) must not cut them.
    lines = [_hdfs(3600 * i, "blk_1", f"step {i}") for i in range(1, 6)]
    lines.insert(2, _hdfs(3600 * 2 + 1, "blk_2", "other"))
    path = tmp_path / "hdfs.log"
    path.write_text("\n".join(lines) + "\n")
    skipped = replay.Skipped()
    cfg = SessionsConfig(max_open_secs=1.0)
    out = list(replay.sessions_from_log(path, "hdfs", cfg, InputConfig(dialect="hdfs"), skipped))
    assert skipped.count == 0
    got = sorted((s.key, s.close_reason, s.revision, len(s.lines), s.source_id) for s in out)
    assert got == [("blk_1", "end_of_input", 1, 5, "blk_1"), ("blk_2", "end_of_input", 1, 1, "blk_2")]


def test_replay_windows_exported_json_records_by_their_key_and_time_fields(tmp_path):
    import json

    recs = [{"message": f"step {i}", "session": f"s{i % 2}", "ts": 1_764_583_200 + i} for i in range(6)]
    path = tmp_path / "range.log"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    skipped = replay.Skipped()
    inp = InputConfig(format="json", dialect="generic", json_key_field="session", timestamp_field="ts")
    out = list(replay.sessions_from_log(path, "generic", SessionsConfig(), inp, skipped))
    assert skipped.count == 0
    assert sorted((s.key, [ln.message for ln in s.lines]) for s in out) == [
        ("s0", ["step 0", "step 2", "step 4"]), ("s1", ["step 1", "step 3", "step 5"])]
    assert out[0].lines[0].ts == 1_764_583_200 + int(out[0].lines[0].message[-1])


async def test_template_level_replay_judges_each_template_once_and_scores_lines(tmp_path):
    import io

    import orjson

    from rationad.config import ModelConfig
    from tests.rationad.fakes import FakeModel

    lines = [f"INFO request {i} served in {i} ms" for i in range(40)]
    lines[7] = "ERROR disk sda1 failed"
    lines[30] = "ERROR disk sda3 failed"
    path = tmp_path / "app.log"
    path.write_text("\n".join(lines) + "\n")
    labels = {str(n): ("anomalous" if n in (8, 31) else "normal") for n in range(1, 41)}  # 1-based line numbers
    sessions = replay.sessions_from_log(path, "generic", SessionsConfig(mode="fixed", window_lines=1),
                                        InputConfig(dialect="generic"), replay.Skipped(), labels)
    out = io.BytesIO()
    model = FakeModel()
    scores, calls = await replay.judge_by_template(sessions, ModelConfig(), "generic", out, use_cache=True,
                                                   client=model, chunk=16)
    recs = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert len(recs) == 40  # one verdict per line
    assert [r["id"] for r in recs if r["verdict"] == "anomalous"] == ["8", "31"]
    assert calls == 2  # two templates for 40 lines
    assert scores.summary()["f1"] == 1.0 and scores.labelled == 40
    assert recs[7]["templates"][0]["template"] == "ERROR disk sda{*} failed"


def test_fixed_windows_a_line_naming_several_blocks_starts_get_distinct_ids(tmp_path):
    """Failing before its fix: an HDFS delete naming three blocks starts three fixed windows at line 1, and each was
    written with id "1" (a consumer deduplicating by id kept one of three verdicts)."""
    path = tmp_path / "hdfs.log"
    path.write_text("081109 203615 148 INFO dfs.FSNamesystem: BLOCK* ask 10.250.14.224:50010 to delete  blk_-1 blk_-2 "
                    "blk_-3\n081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_-1 "
                    "terminating\n")
    sessions = list(replay.sessions_from_log(path, "hdfs", SessionsConfig(mode="fixed", window_lines=2),
                                             InputConfig(dialect="hdfs"), replay.Skipped()))
    assert sorted((s.key, s.source_id) for s in sessions) == [("blk_-1", "1"), ("blk_-2", "1#2"), ("blk_-3", "1#3")]


def test_scores_without_labels_are_null_and_failed_templates_count_as_not_well_formed():
    s = replay.Scores()
    s.add(None, "anomalous", True, 0.9)
    assert s.summary()["f1"] is None and s.summary()["precision"] is None
    s.templates, s.templates_failed = 3, 1
    s.malformed += 1  # a window with an unjudged template (judge_by_template)
    out = s.summary()
    assert out["templates_judged"] == 3 and out["templates_failed"] == 1 and out["format_valid_rate"] == 0.0


def test_best_f1_recommends_a_threshold_an_operator_can_configure():
    """Found by review (2026-12-06), failing before its fix: the summary rounded the threshold to 6 decimals (1.25e-6
    became 1e-06, flagging a normal session; 5e-7 became 0.0, which the config refuses), and a score of 0 (served
    normal on void evidence, flagged by no threshold) could be the best point, recommending 0.0."""
    pairs = [(0.9, True), (1.3e-6, True), (1.2e-6, False), (1e-8, False)]
    scores = replay.Scores(pairs=pairs)
    summary = scores.curve_summary()
    point = replay.at_threshold(replay.pr_curve(pairs), summary["best_f1_threshold"], 2, 2)
    assert summary["best_f1"] == 1.0 and (point.tp, point.fp) == (2, 0)
    assert replay.Scores(pairs=[(0.9, True), (3e-7, True), (1e-8, False)]).curve_summary()["best_f1_threshold"] > 0
    point, threshold = replay.best_f1(replay.pr_curve([(0.3, True), (0.0, True)]))
    assert point.threshold == 0.3 and 0 < threshold <= 0.3
    assert replay.best_f1(replay.pr_curve([(0.9, False), (0.2, False)])) is None  # nothing anomalous: no choice
    assert "best_f1" not in replay.Scores(pairs=[(0.9, False)]).curve_summary()
    assert replay.best_f1(replay.pr_curve([(0.0, True)])) is None


def test_labels_read_a_first_row_of_data_and_refuse_a_key_labelled_both_ways(tmp_path):
    """Found by review (2026-12-06): the first row was always dropped as a header (a headerless file lost its first
    label), and a key labelled twice took the last label silently."""
    import pytest

    f = tmp_path / "labels.csv"
    f.write_text("1,1\n2,0\n")
    assert replay.read_labels(f) == {"1": "anomalous", "2": "normal"}
    f.write_text("BlockId,Label\nblk_1,Anomaly\nblk_1,Anomaly\n")
    assert replay.read_labels(f) == {"blk_1": "anomalous"}
    f.write_text("BlockId,Label\nblk_1,Anomaly\nblk_1,Normal\n")
    with pytest.raises(ValueError, match="labels.csv:3: 'blk_1' is labelled both anomalous and normal"):
        replay.read_labels(f)


def test_a_carriage_return_inside_a_line_keeps_the_line_numbers(tmp_path):
    """Found by review (2026-12-06), failing before its fix: replay read the file with universal newlines, so a lone
    '\\r' made a file line of its own and shifted every later line number, and the labels given by line number with
    them. File lines are numbered by '\\n'; a lone '\\r' inside one ends a log line as in the daemon's records
    (``rationad.dialects``): both of its lines are line 1's."""
    path = tmp_path / "app.log"
    path.write_bytes(b"x\ry\nERROR z\r\n")
    cfg = SessionsConfig(mode="fixed", window_lines=1)
    out = list(replay.sessions_from_log(path, "generic", cfg, InputConfig(dialect="generic"), replay.Skipped(),
                                        labels={"2": "anomalous"}))
    assert [(s.source_id, [ln.message for ln in s.lines], s.label) for s in out] == \
        [("1", ["x"], None), ("1#2", ["y"], None), ("2", ["ERROR z"], "anomalous")]  # two windows start at line 1


def test_a_key_that_logs_no_more_closes_by_its_gap_as_in_the_daemon(tmp_path):
    """Found by review (2026-12-06), failing before its fix: replay never ticked the windows, so a key that logs no
    more stayed open to the end of the file, and at sessions.max_open_sessions the oldest open one was evicted: a
    live session cut in two (X and X#2) where the daemon's gap closes the stale one."""
    events = [(1, 0), (2, 1)] + [(1, t) for t in range(100, 1000, 100)] + [(3, 1000), (4, 1001), (1, 1100),
                                                                        (1, 1200)]  # 1 lives on, 2 logs no more
    path = tmp_path / "hdfs.log"
    path.write_text("".join(_hdfs(t, f"blk_{k}", "Receiving block") + "\n" for k, t in events))
    cfg = SessionsConfig(gap_secs=300.0, max_open_sessions=3)
    out = list(replay.sessions_from_log(path, "hdfs", cfg, InputConfig(dialect="hdfs"), replay.Skipped()))
    got = {s.source_id: (len(s.lines), s.close_reason) for s in out}
    assert got["blk_1"] == (12, "end_of_input") and "blk_1#2" not in got and got["blk_2"][1] == "gap", got


def test_a_line_dated_far_ahead_is_untimed_in_replay_as_in_the_daemon(tmp_path):
    """Found by review, failing before its fix: replay's clock was each line's own time, so sessions.max_future_secs
    could not fire: one line dated 2099 in a 2008 file closed every open session and made every later line late (a
    block judged in pieces), where the daemon takes such a line as untimed against its wall clock."""
    lines = [_hdfs(60 * i, "blk_1", f"step {i}") for i in range(1, 4)]
    lines.insert(1, "991109 000000 148 INFO dfs.DataNode: far ahead blk_2")
    path = tmp_path / "hdfs.log"
    path.write_text("\n".join(lines) + "\n")
    out = list(replay.sessions_from_log(path, "hdfs", SessionsConfig(), InputConfig(dialect="hdfs"),
                                        replay.Skipped()))
    got = sorted((s.key, s.close_reason, len(s.lines)) for s in out)
    assert got == [("blk_1", "end_of_input", 3), ("blk_2", "end_of_input", 1)], got


def test_a_quiet_spell_longer_than_max_future_secs_keeps_replay_s_clock_moving(tmp_path):
    """Found by review of the fix above: holding max_future_secs against the file's newest time froze the clock
    after any quiet spell longer than a day, and every later line lost its time (two lifecycles of a block judged
    as one). Held against the wall clock, as the daemon does."""
    day9 = [_hdfs(60, "blk_1", "step")]
    day11 = [line.replace("081109", "081111") for line in
             [_hdfs(60, "blk_7", "a"), _hdfs(120, "blk_7", "b"), _hdfs(7200, "blk_7", "c"), _hdfs(7300, "blk_8", "d")]]
    path = tmp_path / "hdfs.log"
    path.write_text("\n".join(day9 + day11) + "\n")
    out = list(replay.sessions_from_log(path, "hdfs", SessionsConfig(gap_secs=1800), InputConfig(dialect="hdfs"),
                                        replay.Skipped()))
    got = sorted((s.source_id, s.close_reason, len(s.lines)) for s in out)
    assert got == [("blk_1", "gap", 1), ("blk_7", "gap", 2), ("blk_7#2", "end_of_input", 1),
                   ("blk_8", "end_of_input", 1)]
    assert all(x.ts is not None for s in out for x in s.lines)


async def test_template_level_replay_counts_ungrounded_windows_in_its_summary(tmp_path):
    """Found by review, failing before its fix: at template level every window was counted grounded in the summary,
    whatever its own record said."""
    from tests.rationad.fakes import FakeModel

    bad = "<think>L1: ERROR line; see also L7: the operation failed.</think>\n<answer>anomalous</answer>"
    model = FakeModel(lambda t: bad if "ERROR" in t else "<think>L1: routine line; nothing failed.</think>\n"
                      "<answer>normal</answer>")
    path = tmp_path / "app.log"
    path.write_text("INFO ok 1\nERROR disk sda1 failed\nINFO ok 2\n")
    sessions = replay.sessions_from_log(path, "generic", SessionsConfig(mode="fixed", window_lines=1),
                                        InputConfig(dialect="generic"), replay.Skipped())
    out = io.BytesIO()
    scores, _ = await replay.judge_by_template(sessions, ModelConfig(), "generic", out, use_cache=True, client=model,
                                               threshold=0.5)
    recs = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert [r["grounded"] for r in recs] == [True, False, True]
    assert scores.summary()["grounded_rate"] == pytest.approx(2 / 3, abs=1e-4)


def test_the_pr_table_prints_every_digit_a_threshold_needs():
    """Found by review, failing before its fix: eight significant digits printed 0.9999999999 and 0.9999999997 both as
    "1"; "1" copied into judge.threshold_* flags only scores of exactly 1.0."""
    pairs = [(0.9999999999, True), (0.9999999997, True), (0.999999999, False), (0.2, False)]
    table = replay.operating_points_table(pairs, 0.5)
    assert "0.9999999999 " in table and "0.9999999997 " in table


def test_continuation_lines_of_an_exported_record_join_their_entry_as_in_the_daemon(tmp_path):
    """Found by review, failing before its fix: an exported multi-line record (a stack trace) is several lines of
    the file, and replay parsed each alone: the trace lines were skipped (or judged as entries of their own), where
    the daemon judges them with the entry they continue."""
    inp = InputConfig(dialect="generic", key_regex=r"req=(\w+)")
    path = tmp_path / "range.log"
    path.write_text("INFO req=41 upload started\nERROR req=42 upload failed: java.io.IOException: disk full\n"
                    "\tat org.x.Store.write(Store.java:88)\n\tat org.x.Up.run(Up.java:12)\nINFO req=43 done\n")
    skipped = replay.Skipped()
    out = {s.key: s for s in replay.sessions_from_log(path, "generic", SessionsConfig(gap_secs=60), inp, skipped)}
    assert skipped.count == 0 and sorted(out) == ["41", "42", "43"]
    [line] = out["42"].lines
    assert line.message.endswith("\tat org.x.Up.run(Up.java:12)") and line.offset == 2


def test_a_label_on_a_continuation_line_counts_for_its_window(tmp_path):
    """Found by review (2026-12-07), failing before its fix: a line joined to the entry before it (its record) was
    judged in that entry's window, but a ``line,label`` entry for it was never read: the window's label came from the
    entry's first line only, and precision and recall were off with no word said."""
    inp = InputConfig(dialect="bgl")
    path = tmp_path / "w.log"
    head = "- 111783857{} 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.5{}.675872 R02-M1-N0-C:J12-U11 RAS "
    ok, fatal = head + "KERNEL INFO instruction cache parity error corrected", head + "APP FATAL ciod: failed"
    path.write_text(f"{ok.format(0, 0)}\n{fatal.format(1, 1)}\n   continuation detail line\n{ok.format(2, 2)}\n")
    cfg = SessionsConfig(mode="fixed", window_lines=1)
    labels = {"1": "normal", "2": "normal", "3": "anomalous", "4": "normal"}
    got = [(s.first_offset, len(s.lines), s.label)
           for s in replay.sessions_from_log(path, "bgl", cfg, inp, replay.Skipped(), labels)]
    assert got == [(1, 1, "normal"), (2, 1, "anomalous"), (4, 1, "normal")]


def test_the_pr_table_offers_no_threshold_no_setting_can_have(tmp_path):
    """Found by review (2026-12-07), failing before its fix: a score of 0 (an answer served normal on void evidence,
    flagged at no threshold; the config refuses 0) was a row of the table counting those answers as flagged, a
    recall no setting reaches; and with F1 0 at every threshold above 0, "best F1" recommended one that flags only
    normal outputs."""
    pairs = [(0.0, True), (0.0007, True), (0.0005, False), (0.0001, False)]
    table = replay.operating_points_table(pairs, 0.5)
    assert not [row for row in table.splitlines()[2:] if float(row.split()[0]) == 0.0]
    assert replay.best_f1(replay.pr_curve([(0.0, True), (0.0, True), (0.5, False), (0.2, False)])) is None
    path = tmp_path / "curve.csv"
    replay.write_curve(path, pairs)
    assert [row.split(",")[0] for row in path.read_text().splitlines()[1:]] == ["0.0007", "0.0005", "0.0001"]


def test_a_line_the_parser_fails_on_after_an_entry_is_skipped_alone(tmp_path, monkeypatch):
    """Found by review (2026-12-07), failing before its fix: a parser bug met while asking whether a line continues
    the entry before it left replay (a traceback), where the daemon dead-letters the record and goes on."""
    from rationad.dialects import Parser

    real = Parser._generic

    def generic(self, line, *a, **kw):
        if "boom" in line:
            raise IndexError("parser bug")
        return real(self, line, *a, **kw)

    monkeypatch.setattr(Parser, "_generic", generic)
    inp = InputConfig(dialect="generic", key_regex=r"req=(\w+)")
    path = tmp_path / "b.log"
    path.write_text("INFO req=41 upload started\nINFO req=42 boom\nINFO req=43 done\n")
    skipped = replay.Skipped()
    out = {s.key for s in replay.sessions_from_log(path, "generic", SessionsConfig(gap_secs=60), inp, skipped)}
    assert out == {"41", "43"} and skipped.count == 1 and "parse_failed" in skipped.examples[0]


def test_a_continuation_too_long_in_bytes_or_not_utf8_is_skipped_alone(tmp_path):
    """Found by review of the joining above, failing before its fix: the join was bounded in characters, so a
    continuation of 40,000 'ü' (80,000 bytes) made the record too large and its entry line was skipped with it;
    a continuation that is not UTF-8 likewise took its entry into the skipped record."""
    inp = InputConfig(dialect="generic", key_regex=r"req=(\w+)")
    for cont in ("\tat " + "ü" * 40_000, "\tat \udcff\udcfe bad bytes"):
        path = tmp_path / "u.log"
        path.write_bytes(("ERROR req=42 upload failed\n" + cont + "\nINFO req=43 done\n").encode("utf-8",
                                                                                               "surrogateescape"))
        skipped = replay.Skipped()
        out = {s.key for s in replay.sessions_from_log(path, "generic", SessionsConfig(gap_secs=60), inp, skipped)}
        assert out == {"42", "43"} and skipped.count == 1 and skipped.examples[0].startswith(f"{path}:2:"), \
            (out, skipped.examples)


def test_a_line_the_parser_keeps_apart_keeps_its_own_line_number(tmp_path):
    """Found by review, failing before its fix: replay joined every indented line to the entry before it, and the
    generic parser (which keeps every line that parses apart) split them again, each with the entry's line number:
    ids 1, 2, 2, 2, 5, and the labels of lines 3 and 4 given to the windows by line 2's. The daemon, given one line a
    record, numbers each line. Lines are joined only where the parser joins them (here hdfs: a headerless line with a
    block id after a headerless entry is an entry of its own)."""
    path = tmp_path / "app.log"
    path.write_text("INFO start\nERROR boom failed\n\tat com.foo.Bar(Bar.java:1)\n\tat com.foo.Baz(Baz.java:2)\n"
                    "INFO ok\n")
    labels = {"1": "normal", "2": "anomalous", "3": "normal", "4": "normal", "5": "normal"}
    out = list(replay.sessions_from_log(path, "generic", SessionsConfig(mode="fixed", window_lines=1),
                                        InputConfig(dialect="generic"), replay.Skipped(), labels))
    assert [(s.source_id, [ln.offset for ln in s.lines], s.label) for s in out] == [
        ("1", [1], "normal"), ("2", [2], "anomalous"), ("3", [3], "normal"), ("4", [4], "normal"),
        ("5", [5], "normal")]
    path.write_text("no header here blk_1\n  indented too blk_2\n")
    out = list(replay.sessions_from_log(path, "hdfs", SessionsConfig(), InputConfig(dialect="hdfs"), replay.Skipped()))
    assert sorted((s.key, [(ln.offset, ln.raw) for ln in s.lines]) for s in out) == [
        ("blk_1", [(1, "no header here blk_1")]), ("blk_2", [(2, "  indented too blk_2")])]


def test_a_blank_line_inside_a_stack_trace_keeps_the_trace_with_its_entry(tmp_path):
    """Found by review: a blank line in a generic trace started a record of its own, and the trace lines after it,
    joined to that blank record, were skipped (no session key). The parser drops blank lines inside a record."""
    path = tmp_path / "app.log"
    path.write_text("ERROR req=7 payment failed\n\tat Pay.charge(Pay.java:42)\n\n\tat Api.post(Api.java:7)\n"
                    "INFO req=8 ok\n")
    skipped = replay.Skipped()
    out = list(replay.sessions_from_log(path, "generic", SessionsConfig(),
                                        InputConfig(dialect="generic", key_regex=r"req=(\w+)"), skipped))
    assert skipped.count == 0
    assert [(s.key, [ln.raw for ln in s.lines]) for s in out] == [
        ("7", ["ERROR req=7 payment failed\n\tat Pay.charge(Pay.java:42)\n\tat Api.post(Api.java:7)"]),
        ("8", ["INFO req=8 ok"])]


def test_joining_a_file_s_lines_parses_each_line_once(tmp_path):
    """Found by review: each continuation line was parsed again with the record's first line, up to
    input.max_record_bytes long: a 32 KB entry followed by 10,000 short lines took 4.7 s (crafted log text). Each
    line is parsed alone now, once or twice: the characters parsed are linear in the file."""
    from rationad.dialects import make_parser

    cfg = InputConfig(dialect="hdfs", max_record_bytes=1 << 20)
    parser = make_parser(cfg)
    parsed = 0
    line = parser._line

    def counted(text, *a):
        nonlocal parsed
        parsed += len(text)
        return line(text, *a)

    parser._line = counted
    path = tmp_path / "app.log"
    path.write_text("081109 203615 148 INFO dfs.DataNode: " + "x" * 32_000 + " blk_1\n" + "\tx\n" * 1_000)
    [(first, record)] = list(replay._records(open(path), parser, cfg))
    assert first == 1 and record.count("\n") == 1_000 and parsed <= 3 * path.stat().st_size


def test_a_log_that_breaks_midway_judges_the_windows_it_opened_first(tmp_path):
    """Found by review: a truncated gzip raised out of the windowing, so the sessions still open (all of them, for a
    short HDFS file) were lost while the error said they were judged. They are flushed before the error goes on."""
    import gzip as gz

    whole = gz.compress(b"".join(b"081109 2036%02d 148 INFO dfs.DataNode: Receiving block blk_%d\n" % (i % 60, i)
                                 for i in range(200)))
    path = tmp_path / "app.log.gz"
    path.write_bytes(whole[: len(whole) // 2])
    got = []
    with pytest.raises(EOFError):
        for s in replay.sessions_from_log(path, "hdfs", SessionsConfig(), InputConfig(dialect="hdfs"),
                                          replay.Skipped()):
            got.append(s)
    assert got and all(s.close_reason == "end_of_input" for s in got)


def _refusing(text: str, kind: str = "rejected") -> str:
    """The fake model's answer, refusing a request for its content as vllm-server reports a 400 (``rejected``), or
    as a filter in front of it answers 403 for one prompt (``config``; the probe is answered)."""
    from rationad.model.base import ModelError
    from tests.rationad.fakes import ANOMALOUS, NORMAL

    if "HUGE" in text:
        status = "rejected the request: 400" if kind == "rejected" else "403 Forbidden"
        raise ModelError(f"POST http://vllm:8000/v1/chat/completions {status}", kind=kind)
    return ANOMALOUS if "ERROR" in text else NORMAL


@pytest.mark.parametrize("kind", ["rejected", "config"])
async def test_a_session_the_model_refuses_is_written_with_its_error_and_the_rest_judged(tmp_path, kind):
    """Found by review, failing before its fix: one request the model refused (400, 413: ModelError "rejected")
    ended the whole replay with a traceback, where the daemon splits the batch and dead-letters that session alone.
    A filter's 403 for one prompt (kind "config", the probe answered) is that too (second review)."""
    from functools import partial

    from tests.rationad.fakes import FakeModel

    path = tmp_path / "app.log"
    path.write_text("INFO a 1\nERROR b failed\nINFO HUGE line\nINFO c 2\n")
    cfg = SessionsConfig(mode="fixed", window_lines=1)
    for judge in (replay.judge_sessions, replay.judge_by_template):
        sessions = replay.sessions_from_log(path, "generic", cfg, InputConfig(dialect="generic"), replay.Skipped())
        out = io.BytesIO()
        scores, _ = await judge(sessions, ModelConfig(), "generic", out, use_cache=False,
                                client=FakeModel(partial(_refusing, kind=kind)), threshold=0.5)
        recs = [orjson.loads(x) for x in out.getvalue().splitlines()]
        assert [r["verdict"] for r in recs[:2] + recs[3:]] == ["normal", "anomalous", "normal"], judge
        assert recs[2]["error"].startswith("model_rejected: POST") and recs[2]["score"] is None
        assert scores.total == 4 and scores.malformed == 1  # not well-formed, as a malformed answer
        if judge is replay.judge_sessions:
            assert recs[2]["verdict"] is None
        else:  # (a window is decided from the templates that have a verdict; this one is listed unjudged)
            assert len(recs[2]["unjudged_templates"]) == 1 and scores.templates_failed == 1


async def test_a_model_that_stops_answering_stops_replay_with_what_was_judged(tmp_path):
    """Found by review: a ModelError left replay as a traceback. An outage (after the client's own retries), or a
    model that refuses every request (the probe too), stops replay with the scores of what was written before."""
    from rationad.model.base import ModelError
    from tests.rationad.fakes import NORMAL, FakeModel

    def down_after_two(text: str) -> str:
        model.seen += 1
        if model.seen > 2:
            raise ModelError("POST http://vllm:8000/v1/chat/completions failed after 4 attempt(s): 503", kind="outage")
        return NORMAL

    def refuses_all(text: str) -> str:
        raise ModelError("rejected the request: 400 max_logprobs", kind="rejected")

    path = tmp_path / "app.log"
    path.write_text("".join(f"INFO step {i}\n" for i in range(6)))
    for answer, why in ((down_after_two, "failed after 4 attempt"), (refuses_all, "refuses every request")):
        model = FakeModel(answer)
        model.seen = 0
        sessions = replay.sessions_from_log(path, "generic", SessionsConfig(mode="fixed", window_lines=2),
                                            InputConfig(dialect="generic"), replay.Skipped())
        out = io.BytesIO()
        with pytest.raises(replay.ModelUnavailable, match=why) as stopped:
            await replay.judge_sessions(sessions, ModelConfig(), "generic", out, use_cache=False, client=model,
                                        chunk=1)
        written = out.getvalue().splitlines()
        assert stopped.value.scores.total == len(written) == (2 if answer is down_after_two else 0)


async def test_replay_output_escapes_terminal_controls_and_keeps_the_json(tmp_path):
    """Found by review, failing before its fix: replay wrote log text with C1 controls (U+009B is a one-character
    CSI) and bidi overrides raw to the operator's terminal; ``rationad tail`` escapes them. Parsed, the JSON is the
    same."""
    from tests.rationad.fakes import FakeModel

    line = "ERROR disk \u009b2J\u202e deliaf failed"
    path = tmp_path / "c1.log"
    path.write_text(line + "\nINFO ok\u2066\n")
    for judge in (replay.judge_sessions, replay.judge_by_template):
        sessions = replay.sessions_from_log(path, "generic", SessionsConfig(mode="fixed", window_lines=1),
                                            InputConfig(dialect="generic"), replay.Skipped())
        out = io.BytesIO()
        await judge(sessions, ModelConfig(), "generic", out, use_cache=False, client=FakeModel())
        text = out.getvalue().decode()
        assert not any(c in text for c in "\u009b\u202e\u2066"), (judge, text)
        assert "\\u009b" in text
        recs = [orjson.loads(x) for x in out.getvalue().splitlines()]
        assert recs[0]["evidence"][0]["line"] == line


def test_csv_files_saved_with_a_byte_order_mark_lose_nothing(tmp_path):
    """Found by review, failing before its fix: a labels CSV saved with a UTF-8 BOM (a spreadsheet's) made the first
    key "\\ufeff1", and that label was lost without a word; a template CSV so saved lost its first column's name."""
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbf1,anomalous\n2,normal\n")
    assert replay.read_labels(labels) == {"1": "anomalous", "2": "normal"}
    templates = tmp_path / "t.csv"
    templates.write_bytes(b"\xef\xbb\xbfEventTemplate,Label\nfan <*> failed,1\n")
    [s] = replay.sessions_from_templates(templates)
    assert s.lines[0].raw == "fan <*> failed" and s.label == "anomalous"


def test_a_template_that_is_not_utf8_is_refused_naming_its_line(tmp_path):
    """Found by review, failing before its fix: a template CSV in Latin-1 reached the prompt as lone surrogates, and
    replay ended in a TypeError from the JSON encoder. Refused, naming file and line (the daemon dead-letters a record
    that is not UTF-8); not guessed at."""
    templates = tmp_path / "t.csv"
    templates.write_bytes(b"EventTemplate,Label\nfan <*> failed,1\ncaf\xe9 <*> started,0\n")
    sessions = replay.sessions_from_templates(templates)
    assert next(sessions).lines[0].raw == "fan <*> failed"
    with pytest.raises(ValueError, match=r"t\.csv:3: EventTemplate is not UTF-8 text"):
        next(sessions)


async def test_a_session_closed_early_to_bound_memory_is_judged_at_the_unfinished_threshold():
    """Found by review (2026-12-07), failing before its fix: replay closes sessions early to bound memory (evicted,
    unfinished) as the daemon does, but judged them at the finished sessions' threshold, where the daemon serves them
    at judge.threshold_unfinished, and put them on the curve judge.threshold_session is chosen from."""
    from rationad.model.base import Completion
    from rationad.records import LogLine, Session
    from tests.rationad.fakes import NORMAL, FakeModel

    class Scored(FakeModel):
        async def generate(self, conversations, *, max_tokens, temperature, regex):
            self.calls += 1
            return [Completion(NORMAL, 10, 10, score=0.1) for _ in conversations]

    def session(key: str, reason: str) -> Session:
        line = "081109 203615 148 INFO dfs.DataNode$DataXceiver: Receiving block " + key
        return Session(key=key, lines=[LogLine(key, line, line)], close_reason=reason, label="normal")

    out = io.BytesIO()
    scores, _ = await replay.judge_sessions([session("blk_1", "evicted"), session("blk_2", "gap")], ModelConfig(),
                                            "hdfs", out, use_cache=False, client=Scored(), threshold=0.0007,
                                            threshold_unfinished=0.5)
    recs = {r["id"]: r for r in map(orjson.loads, out.getvalue().splitlines())}
    assert (recs["blk_1"]["verdict"], recs["blk_1"].get("unfinished")) == ("normal", True)
    assert (recs["blk_2"]["verdict"], recs["blk_2"].get("unfinished")) == ("anomalous", None)
    assert scores.pairs == [(0.1, False)] and scores.summary()["unfinished"] == 1


def test_every_point_of_the_pr_curve_csv_flags_what_it_says_when_configured(tmp_path):
    """Found by review (2026-12-07), failing before its fix: the CSV wrote thresholds with nine digits, so scores
    within 1e-9 of 1 were all written "1" (which configured flags none of them), and a rounded threshold flagged
    another count; best_f1's midpoint of two adjacent floats rounded onto the lower one, flagging both."""
    import csv

    pairs = [(0.99999999996, True), (0.9999999997, False), (0.0123456789876, True), (0.001, False)]
    path = tmp_path / "curve.csv"
    replay.write_curve(path, pairs)
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        flagged = [y for s, y in pairs if s >= float(row["threshold"])]
        assert (len(flagged), sum(flagged)) == (int(row["flagged"]), int(row["tp"])), row
    point, threshold = replay.best_f1(replay.pr_curve([(0.9999999999999999, True), (0.9999999999999998, False)]))
    assert [s for s in (0.9999999999999999, 0.9999999999999998) if s >= threshold] == [0.9999999999999999]


def test_a_labels_file_with_a_misspelt_label_is_refused_not_read_as_a_header(tmp_path):
    """Found by review (2026-12-07), failing before its fix: the first row was taken for a header whenever its label
    was not one, so a header-less file whose first label was misspelt lost that key without a word; a trailing blank
    row refused the whole file, and a third column was ignored."""
    def read(text: str):
        path = tmp_path / "labels.csv"
        path.write_text(text)
        return replay.read_labels(path)

    assert read("BlockId,Label\nblk_1,Anomaly\nblk_2,Normal\n\n") == {"blk_1": "anomalous", "blk_2": "normal"}
    assert read("blk_1,1\nblk_2,0\n") == {"blk_1": "anomalous", "blk_2": "normal"}
    for bad in ("blk_1,Anomlay\nblk_2,Normal\n", "key,label\nblk_1,Normal,Anomaly\n"):
        with pytest.raises(ValueError, match=r"labels.csv:[12]: expected 'key,label'"):
            read(bad)


@pytest.mark.parametrize("csv_text", ["EventTemplate,Label\nkernel panic <*>\nfan ok,0\n",
                                      "EventTemplate,Label\nkernel panic <*>,1\nfan ok,maybe\n"])
def test_a_template_csv_row_without_a_label_is_refused_naming_its_line(tmp_path, csv_text):
    """Found by review (2026-12-07), failing before its fix: a row short of the label column crashed replay with an
    AttributeError traceback (after the model had run, for a later row), and a value that is no label left the
    template unscored without a word."""
    path = tmp_path / "t.csv"
    path.write_text(csv_text)
    with pytest.raises(ValueError, match=r"t.csv:[23]: Label is not a normal/anomaly label"):
        list(replay.sessions_from_templates(path))
