"""Replay windows a file through the daemon's Sessionizer; its clock is the file's own event time."""

from __future__ import annotations

from rationad import replay
from rationad.config import InputConfig, SessionsConfig


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


def test_scores_without_labels_are_null_and_failed_templates_count_as_not_well_formed():
    s = replay.Scores()
    s.add(None, "anomalous", True, 0.9)
    assert s.summary()["f1"] is None and s.summary()["precision"] is None
    s.templates, s.templates_failed = 3, 1
    s.malformed += 1  # a window with an unjudged template (judge_by_template)
    out = s.summary()
    assert out["templates_judged"] == 3 and out["templates_failed"] == 1 and out["format_valid_rate"] == 0.0
