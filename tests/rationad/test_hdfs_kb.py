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
