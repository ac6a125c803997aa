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
