"""The demo's progress line, its failure/slow reasons and its score against the sample's labels (issue 15)."""

from rationad.demo import Progress, cache_dir, score


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_score_precision_recall_and_unjudged_anomalies_count_as_missed():
    labels = {"a": "anomalous", "b": "anomalous", "c": "anomalous", "d": "normal", "e": "normal"}
    verdicts = {"a": "anomalous", "b": "normal", "d": "anomalous", "e": "normal"}
    s = score(verdicts, labels, dead_blocks={"c"})
    assert (s["true_positives"], s["false_positives"], s["false_negatives"]) == (1, 1, 2)
    assert s["precision"] == 0.5 and s["recall"] == round(1 / 3, 3)
    assert s["judged"] == 4 and s["accounted"] == 5 and s["dead_lettered_blocks"] == 1 and s["anomalous"] == 2


def test_score_with_nothing_flagged_has_no_precision():
    s = score({"a": "normal"}, {"a": "normal"})
    assert s["precision"] is None and s["recall"] is None and s["accounted"] == 1


def test_progress_line_and_stage_times():
    clock = Clock()
    p = Progress(400, clock=clock)
    p.stage("streaming the sample")
    clock.t += 3
    p.stage("loading the model")
    clock.t += 40
    p.stage("judging")
    clock.t += 20
    p.judged, p.anomalous, p.model_calls, p.pending, p.in_flight = 120, 9, 30, 16, 2
    line = p.line()
    assert "120/400 blocks judged" in line and "9 anomalous" in line and "30 model calls" in line
    assert "16 waiting" in line and "2 batches at the model" in line and "judging" in line and "63 s" in line
    assert p.stage_secs() == {"streaming the sample": 3.0, "loading the model": 40.0, "judging": 20.0}


def test_why_names_the_stage_and_how_far():
    clock = Clock()
    p = Progress(400, clock=clock)
    p.stage("loading the model")
    clock.t += 700
    why = p.why("gave up")
    assert "gave up after 700 s in stage 'loading the model'" in why and "0/400 blocks judged" in why
    assert "loading the model 700 s" in why


def test_the_setup_cache_folder_variable_is_not_a_settings_section(monkeypatch):
    # RATIONAD_CACHE would be read by the settings as the [cache] section: the folder is RATIONAD_CACHE_DIR
    monkeypatch.setenv("RATIONAD_CACHE_DIR", "/tmp/empty-cache")
    assert str(cache_dir()) == "/tmp/empty-cache"
    from rationad.config import load_settings

    assert load_settings().cache.enabled


def test_a_demo_that_showed_no_anomaly_or_whose_daemon_failed_fails():
    """Found by review (2026-12-07), failing before its fix: the demo exited 0 once every block was accounted for,
    also when the model dead-lettered every block or judged all of them normal (no anomaly event shown, which is
    what the demo is for), and whatever the daemon's exit code."""
    from rationad.demo import failure

    labels = {"a": "anomalous", "b": "normal"}
    ok = {**score({"a": "anomalous", "b": "normal"}, labels), "outcome": "done", "daemon_exit": 0}
    assert failure(ok) is None
    assert "no anomaly event" in failure({**score({}, labels, dead_blocks={"a", "b"}), "outcome": "done"})
    assert "no anomaly event" in failure({**score({"a": "normal", "b": "normal"}, labels), "outcome": "done"})
    assert "exit code 1" in failure({**ok, "daemon_exit": 1})
    assert failure({**ok, "outcome": "gave up"}) == "not every block was judged"
    # a daemon that failed stops the demo too: its exit code is the reason (review of the first version)
    assert "exit code 1" in failure({**ok, "outcome": "daemon stopped", "daemon_exit": 1})


async def test_ctrl_c_during_the_demo_is_an_interruption_not_a_failure():
    """Found by the review of the demo's exit rule: the daemon takes SIGINT itself (it drains and stops), so the demo
    never saw a KeyboardInterrupt and said "not every block was judged", exit 1. The daemon notes the signal that
    stopped it, and the demo ends as interrupted (exit 130)."""
    import asyncio
    import os
    import signal

    from rationad.daemon import Daemon
    from tests.rationad import test_daemon as td

    d, _, _ = td.make(td.settings(), [])
    task = asyncio.create_task(d.run())
    for _ in range(200):
        if d._started:
            break
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(task, 20)
    assert isinstance(d, Daemon) and d.stop_signal == "SIGINT"
