"""The knowledge base matches HDFS templates by text, whatever their numbering."""

import csv

from rationad.templates import from_loghub, to_template

from training.knowledge import hdfs_templates, match_hdfs, match_rule


def test_every_loghub_hdfs_template_is_in_the_knowledge_base(datasets):
    texts = {t.text for t in hdfs_templates()}
    with open(datasets / "loghub/HDFS_templates.csv") as f:
        assert {r["EventTemplate"] for r in csv.DictReader(f)} == texts


def test_structured_lines_match_by_text_not_by_id(datasets):
    # HDFS_2k.log_structured.csv numbers templates differently (its E10 is "PacketResponder ... terminating").
    with open(datasets / "loghub/HDFS_2k.log_structured.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        t = match_hdfs(to_template(r["Content"]))
        assert t is not None, r["Content"]
        if "terminating" in r["Content"]:
            assert t.role == "responder_done"
        if r["Content"].startswith("Receiving block"):
            assert t.role == "write_start"


def test_rules_first_match_and_benign_first():
    assert match_rule(from_loghub("<*> generating core.<*>"))[0].verdict == "normal"
    rule, words = match_rule("Lustre mount FAILED : {*}")
    assert rule.verdict == "anomalous" and words.lower().startswith("fail")
    assert match_rule("instruction address: {*}") == (None, None)
