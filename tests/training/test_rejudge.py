"""Rejudging unparsed answers: the set's metrics are recomputed from its verdict records as the evaluation does."""

from training.evaluate import slug, verdicts_file
from training.rejudge import rescore


def test_slug_is_the_evaluation_file_name_and_keeps_the_split():
    assert slug("HDFS unseen sequences (test)") == "hdfs_unseen_sequences_test"
    assert slug("HDFS unseen sequences (val)") == "hdfs_unseen_sequences_val"
    assert slug("BGL_2k windows of 100 lines") == "bgl_2k_windows_of_100_lines"


def test_verdicts_file_reads_an_older_runs_test_verdicts(tmp_path):
    assert verdicts_file(tmp_path, "HDFS sessions (test)") == tmp_path / "hdfs_sessions_test.jsonl"
    (tmp_path / "hdfs_sessions.jsonl").write_text("{}\n")  # written before the split was in the name
    assert verdicts_file(tmp_path, "HDFS sessions (test)") == tmp_path / "hdfs_sessions.jsonl"
    assert verdicts_file(tmp_path, "HDFS sessions (val)") == tmp_path / "hdfs_sessions_val.jsonl"
    (tmp_path / "hdfs_sessions_test.jsonl").write_text("{}\n")
    assert verdicts_file(tmp_path, "HDFS sessions (test)") == tmp_path / "hdfs_sessions_test.jsonl"


def test_rescore_weights_each_view_by_its_sessions_and_counts_unparsed_answers():
    points = [
        {"verdict": "anomalous", "labels": ["anomalous"] * 3, "grounded": True},  # 3 tp
        {"verdict": "anomalous", "labels": ["normal"], "grounded": True},  # 1 fp
        {"verdict": None, "labels": ["anomalous", "anomalous"], "grounded": True},  # unparsed: 2 fn
        {"verdict": "normal", "labels": ["normal"] * 4, "grounded": True},  # 4 tn
    ]
    s = rescore(points, {"seconds": 12.5, "note": "n", "judged_prompts": 4, "model_calls": 5, "f1": 0.1})
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (3, 1, 2, 4)
    assert s["precision"] == 0.75 and s["recall"] == 0.6 and s["f1"] == round(2 * 0.75 * 0.6 / 1.35, 4)
    assert s["judged_format_valid_rate"] == 0.75 and s["format_valid_rate"] == 0.8
    assert s["flag_rate"] == 0.4 and s["seconds"] == 12.5 and s["model_calls"] == 5
    points[2]["verdict"] = "anomalous"
    s = rescore(points, {})
    assert s["fn"] == 0 and s["judged_format_valid_rate"] == 1.0
