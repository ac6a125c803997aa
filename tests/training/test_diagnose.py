"""The HDFS analysis diagnosis: copying errors (walk, tally) told apart from wrong verdicts."""

from training.diagnose import summarize, walk_and_tally

REF = ("L1 x1 allocated, L2 x1 receive start. Starts 1, received 0, acknowledged 0, registered 0; error lines 0. "
       "L2: 1 receive starts but 0 completions: a replica was never fully received. The write of this block failed: "
       "anomalous.")


def test_walk_and_tally_are_the_first_two_sentences():
    walk, tally = walk_and_tally(REF)
    assert walk == "L1 x1 allocated, L2 x1 receive start"
    assert tally == "Starts 1, received 0, acknowledged 0, registered 0; error lines 0."
    assert walk_and_tally("L1 x2 routine. Error lines 0. The lines are routine block operations.")[1] == "Error lines 0."
    assert walk_and_tally("L2 starts 2 replica writes; every replica completed. No failure signal: normal.")[1] == ""


def test_summary_weights_views_by_sessions_and_separates_copying_from_verdict_errors():
    wrong_tally = REF.replace("received 0", "received 1").replace("L2: 1 receive starts", "Every replica completed")
    judged = [
        {"id": "a", "verdict": "anomalous", "rationale": REF, "labels": ["anomalous"] * 3},
        {"id": "b", "verdict": "normal", "rationale": wrong_tally, "labels": ["anomalous"]},
        {"id": "c", "verdict": None, "rationale": None, "labels": ["anomalous"] * 4 + ["normal"] * 2},
    ]
    s = summarize(judged, {"a": REF, "b": REF, "c": REF})
    assert s["sessions"] == 10 and s["accuracy"] == 0.3
    assert s["walk_exact"] == 0.4 and s["walk_tally_exact"] == 0.3 and s["accuracy_walk_tally_exact"] == 1.0
    assert s["accuracy_walk_exact"] == 0.75
