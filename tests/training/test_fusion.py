"""The fusion study's arithmetic (training/fusion.py): F1 counts, the validation-chosen threshold, one row per rule."""

from training.fusion import RULES, best_threshold, f1_at, fusion_rows


def test_f1_counts_hits_false_alarms_and_misses():
    assert f1_at([True, True, False, False], [True, False, True, False]) == (0.5, 1, 1, 1)
    assert f1_at([True, False], [False, False]) == (0.0, 0, 0, 1)


def test_the_best_threshold_flags_least_among_equals():
    assert best_threshold([True, False, False, True], [0.9, 0.2, 0.1, 0.8]) == 0.8  # both anomalies, no false alarm
    # 0.9 (one hit, one miss) and 0.6 (two hits, two false alarms) both give F1 2/3: the higher one is chosen
    assert best_threshold([True, False, False, True], [0.9, 0.8, 0.7, 0.6]) == 0.9


def test_a_rule_is_chosen_on_validation_and_scored_on_test():
    data = {"val": {"y": [True, False, False], "m": [0.9, 0.1, 0.6], "t": [0.4, 0.3, 0.2]},
            "test": {"y": [True, False, True, False], "m": [0.95, 0.7, 0.2, 0.0], "t": [0.5, 0.1, 0.9, 0.2],
                     "served": [True, True, False, False]}}
    rows = fusion_rows(data)
    assert len(rows) == len(RULES)
    model = next(r for r in rows if r.startswith("| model |"))
    assert model.startswith("| model | 0.9000 | 1.000 | 0.667 | 1 / 0 / 1 |")  # 0.95 flagged, 0.7 and 0.2 not
    top = next(r for r in rows if r.startswith("| max |"))
    assert "| 0.9000 | 1.000 | 1.000 | 2 / 0 / 0 |" in top  # the TF-IDF's 0.9 catches the miss the model had


def test_the_best_threshold_may_be_zero_and_exists_without_anomalies():
    """Found by review (2026-12-06): on rationad.replay.best_f1 (which refuses 0, a served score no threshold flags)
    a fused score of 0 could not be the threshold, and a set without anomalies gave 0.0 (flag everything)."""
    assert best_threshold([True, False, False], [0.0, 0.5, 0.7]) == 0.0
    assert best_threshold([False, False, False], [0.9, 0.5, 0.1]) == 0.9
