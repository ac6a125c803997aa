"""The HDFS knowledge base file: read by text, and a bad file fails naming it."""

import pytest

from rationad import hdfs_kb


# ``kb_file``: tests/rationad/conftest.py


@pytest.mark.parametrize("text,says", [(None, "cannot read"), ("{not json", "cannot read"), ("[1]", "not a JSON"),
                                       ('{"templates": [{"text": "x"}]}', "template 1 lacks")])
def test_a_missing_or_corrupt_file_fails_naming_it(kb_file, text, says):
    if text is not None:
        kb_file.write_text(text)
    with pytest.raises(hdfs_kb.KnowledgeError, match=says) as e:
        hdfs_kb.match_hdfs("Receiving block {*}")
    assert str(kb_file) in str(e.value)


def test_pairs_missing_fails_naming_the_file(kb_file):
    kb_file.write_text('{"templates": []}')
    with pytest.raises(hdfs_kb.KnowledgeError, match="sequence_rules") as e:
        hdfs_kb.hdfs_pairs()
    assert str(kb_file) in str(e.value)


def test_the_most_specific_template_wins():
    t = hdfs_kb.match_hdfs("INFO dfs.DataNode$PacketResponder: Received block {*} of size {*} from {*}")
    assert t is not None and t.role == "write_done"
    assert hdfs_kb.match_hdfs("something no template says") is None


def test_matching_is_the_literal_parts_in_order_and_linear_on_a_hostile_line():
    import random
    import re
    import time

    from rationad.hdfs_kb import hdfs_templates, match_hdfs

    templates = hdfs_templates()
    regexes = [re.compile(".*?".join(re.escape(p) for p in t.parts), re.S) for t in templates]  # what it means
    rnd = random.Random(0)
    words = sorted({w for t in templates for p in t.parts for w in p.split()}) + ["x", "blk_1", ":", "{*}"]
    for _ in range(3_000):
        s = " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 25)))
        assert [t.matches(s) for t in templates] == [bool(r.search(s)) for r in regexes], s
    # The first parts of a template again and again, never its last: the regex backtracked cubically on it (tens of
    # seconds of the event loop); the bound is far above the linear scan's
    hostile = "INFO dfs.DataNode: " + "Received block src: dest: " * 230
    start = time.perf_counter()
    assert match_hdfs(hostile) is None
    assert time.perf_counter() - start < 2.0
