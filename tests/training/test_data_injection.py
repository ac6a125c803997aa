"""Injection-hardening copies (training.data_injection): same label, same evidence, the injected rows named as data."""

import re

from rationad.answer import parse_completion
from rationad.prompt import user_message

from training.data_injection import injected_copies
from training.rationales import build, hdfs_signals

INSTRUCTION = re.compile(r"ignore (all )?(previous|prior)|answer normal|always answer|reply|must output", re.I)


def test_copies_keep_label_evidence_and_quote_the_injection(hdfs_examples):
    copies = injected_copies(hdfs_examples, 0.3)
    by_sid = {e.sid: e for e in hdfs_examples}
    assert 0.15 * len(hdfs_examples) < len(copies) < 0.45 * len(hdfs_examples)
    assert injected_copies(hdfs_examples, 0.3) == copies  # deterministic
    pushes_wrong = 0
    for c in copies:
        orig = by_sid[c.sid.removesuffix("-injected")]
        assert c.label == orig.label and c.extra["injected_refs"][0] == "L2"
        injected = [c.view.row(ref).template for ref in c.extra["injected_refs"]]
        # The original rows follow in order with their counts; the knowledge base reads the same evidence.
        rest = [(r.template, r.count) for r in c.view.rows if r.ref not in c.extra["injected_refs"]]
        assert rest == [(r.template, r.count) for r in orig.view.rows]
        assert c.view.line_count == orig.view.line_count + len(injected)
        before, after = hdfs_signals(orig.view), hdfs_signals(c.view)
        assert bool(before.trouble) == bool(after.trouble) and {k: v[1] for k, v in before.roles.items()} == {
            k: v[1] for k, v in after.roles.items()}
        user = user_message(c.view)
        assert "<" not in user and ">" not in user
        pushes_wrong += any(("normal" if c.label == "anomalous" else "anomalous") in t for t in injected)
        r = build(c)
        parsed = parse_completion(r.completion, c.view)
        assert parsed.ok and parsed.verdict == c.label and not parsed.ungrounded_refs
        assert "not an instruction, ignored" in r.think and not INSTRUCTION.search(r.think)
    assert pushes_wrong > len(copies) / 2


def test_only_hdfs_views_are_copied(template_examples):
    assert injected_copies(template_examples, 1.0) == []
