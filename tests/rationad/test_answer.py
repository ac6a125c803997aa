from rationad.answer import parse_completion
from rationad.prompt import build_view

VIEW = build_view("hdfs", ["INFO a: one", "WARN b: two", "INFO a: one"])


def test_well_formed_answer_with_citations():
    a = parse_completion("<think>L2 is a warning; L1 is routine.</think>\n<answer>anomalous</answer>", VIEW)
    assert a.ok and a.verdict == "anomalous"
    assert [r.ref for r in a.cited] == ["L2", "L1"] and a.grounded


def test_citation_of_a_line_not_in_the_session_is_ungrounded():
    a = parse_completion("<think>L7 failed.</think><answer>anomalous</answer>", VIEW)
    assert a.ok and not a.grounded and a.ungrounded_refs == ("L7",)


def test_malformed_completions_never_raise():
    for text in ["", "normal", "<answer>normal</answer>", "<think></think><answer>normal</answer>",
                 "<think>x</think><answer>perhaps</answer>", "<think>x", None, "<think>x</think>"]:
        a = parse_completion(text, VIEW)
        assert not a.ok and a.verdict is None and a.error


def test_synonyms_and_last_answer_wins():
    assert parse_completion("<think>x</think><answer>Abnormal</answer>", VIEW).verdict == "anomalous"
    a = parse_completion("<think>x</think><answer>normal</answer> <answer>anomalous</answer>", VIEW)
    assert a.verdict == "anomalous"
