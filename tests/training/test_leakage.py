"""The leakage audit (training/leakage.py) on the real template sets: what it reports holds of the data."""

import re

from rationad.templates import from_loghub

from training.leakage import rules_audit
from training.splits import split_examples


def test_rule_words_reported_as_val_or_test_only_match_no_training_template(template_examples):
    splits = split_examples(template_examples)
    got = rules_audit(splits)
    dropped = got["alternatives matching val/test templates only"]
    train = [from_loghub(e.extra["template"]) for e in splits["train"]]
    held = [from_loghub(e.extra["template"]) for s in ("val", "test") for e in splits[s]]
    assert dropped
    for alt in dropped:
        rx = re.compile(alt, re.I)
        assert not any(rx.search(t) for t in train) and any(rx.search(t) for t in held), alt
    assert set(got["KB F1"]) == {"bgl val", "bgl test", "spirit val", "spirit test"}


def test_training_evidence_rules_are_served_inside_rules_from_only(template_examples, tmp_path):
    import json

    from rationad.template_rules import match_rule, template_rules

    from training.held_out_rules import rules_from, train_rules

    cut, dropped = train_rules(split_examples(template_examples))
    assert "miscompare" in dropped  # a held-out word (the audit's published list)
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(cut))
    text = "memory test: miscompare on chip 3"
    assert match_rule(text)[0].verdict == "anomalous"
    with rules_from(path):
        assert len(template_rules()[0]) == len(cut["rules"])
        assert match_rule(text)[0] is None  # the daemon's own reader serves the cut file
    assert match_rule(text)[0].verdict == "anomalous"  # and the served file again after


def test_the_embedded_demo_sample_holds_test_split_blocks_only(datasets):
    """The demo's precision and recall are on held-out blocks (scripts/make_demo_sample.py): none was a training or
    validation example (265 of the earlier sample's 400 were training blocks)."""
    from rationad import demo

    from training.data_hdfs import block_splits

    where = block_splits(datasets / "hdfs_2pct")
    assert {where[b][0] for b in demo.sample_labels()} == {"test"}
