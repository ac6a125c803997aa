import re

import pytest

from rationad.answer import CUT_MARK, close_cut_thought, parse_completion
from rationad.prompt import ANSWER_REGEX, build_view

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


def test_synonyms_and_answers_that_agree():
    assert parse_completion("<think>x</think><answer>Abnormal</answer>", VIEW).verdict == "anomalous"
    a = parse_completion("<think>x</think><answer>anomalous</answer> <answer>Anomaly</answer>", VIEW)
    assert a.ok and a.verdict == "anomalous"


@pytest.mark.parametrize("text", [
    "<think>L1 x1. Maybe <answer>anomalous</answer> but unsure</think>",  # an answer only inside the thought
    "<think>x</think><answer>normal</answer> no wait <answer>ANOMALY</answer>",  # two verdicts
    "<think>L1 x1.</think>\n<answer>normal</answer>\n<think>actually L9 is bad</think><answer>anomalous</answer>",
    "<think>L1 x1 is routine.</think>\n<think>actually L9 is bad</think><answer>anomalous</answer>",  # agreeing
])
def test_an_answer_inside_the_thought_or_two_answers_that_disagree_are_no_verdict(text):
    """Found by review (2026-12-06), served before (unconstrained output, another build's cache entries): the last
    answer tag anywhere won, one inside the reasoning or after a second thought whose citations nobody checked."""
    a = parse_completion(text, VIEW)
    assert not a.ok and a.verdict is None and a.error


def test_a_thought_cut_by_the_token_budget_is_closed_at_its_last_complete_sentence():
    v = build_view("hdfs", ["Receiving block blk_1", "Received block blk_1", "PacketResponder 1 terminating"])
    cut = "<think>L1 x1: a receive starts. L2 x1: it completes. L3 x1: the respon"
    closed = close_cut_thought(cut, v)
    assert closed == "<think>L1 x1: a receive starts. L2 x1: it completes." + CUT_MARK + "</think>\n<answer>"
    answer = parse_completion(closed + "normal</answer>", v)
    assert answer.ok and answer.verdict == "normal" and answer.rationale.endswith(CUT_MARK.strip())
    assert re.fullmatch(ANSWER_REGEX, closed + "anomalous</answer>")
    # a walk past the session's last row: cut before the sentence that cites the absent line
    walked = "<think>L1 x1: a receive starts. L3 x1: the responder ends. L4 x1: the"
    assert close_cut_thought(walked, v) == ("<think>L1 x1: a receive starts. L3 x1: the responder ends."
                                            + CUT_MARK + "</think>\n<answer>")
    # a walk past the last row before its first sentence ended (seen in the demo): its last complete item is kept
    assert close_cut_thought("<think>L1 x1 receive start, L2 x1 received, L3 x1 ended, L4 x1 ended, L5", v) == (
        "<think>L1 x1 receive start, L2 x1 received, L3 x1 ended" + CUT_MARK + "</think>\n<answer>")
    assert close_cut_thought("<think>L1 x1 L4 and more.", v) is None  # nothing complete before the absent line
    assert close_cut_thought("<think>L1 x1 a receive sta", v) is None  # nothing complete
    # cut in the answer: the whole rationale, the word to write again
    assert close_cut_thought("<think>L1 fine.</think>\n<answer>nor", v) == "<think>L1 fine.</think>\n<answer>"
    assert close_cut_thought("<think>L1 fine.</think>\n<answer>normal</answer>", v) is None  # answered
    assert close_cut_thought("garbage", v) is None
    # a thought longer than the regex allows (the narrowed regex has no bound) is cut to fit it
    long = "<think>" + "L1 x1: a receive starts. " * 60
    closed = close_cut_thought(long, v)
    assert closed is not None and re.fullmatch(ANSWER_REGEX, closed + "normal</answer>")


def test_refs_of_any_length_are_checked():
    """Found by review (2026-12-03), failing before its fix: refs of 5 or more digits were neither cited nor flagged
    (the event said grounded); thousands of digits must not reach ``int``."""
    from rationad.answer import parse_completion
    from rationad.prompt import build_view

    view = build_view("generic", ["INFO a start", "ERROR b failed", "INFO c"])
    a = parse_completion("<think>L2 failed; L12345 shows the root cause.</think>\n<answer>anomalous</answer>", view)
    assert a.ungrounded_refs == ("L12345",)
    a = parse_completion(f"<think>L2 failed; L{'9' * 5000} too.</think>\n<answer>anomalous</answer>", view)
    assert len(a.ungrounded_refs) == 1


def test_a_nan_logprob_gives_no_score():
    """Found by review (2026-12-03), failing before its fix: a NaN logprob gave a NaN score, which turned an
    anomalous answer into a normal verdict (NaN >= threshold is false)."""
    from rationad.answer import answer_score

    s = answer_score(["<think>L1.</think>\n<answer>", "anomalous", "</answer>"],
                     [[], [("anomalous", float("nan")), ("normal", -3.0)], []])
    assert s is None



def test_the_score_is_read_at_the_answer_that_gives_the_verdict():
    """Found by review (2026-12-03), failing before its fix: the verdict is the last closed ``<answer>`` section and
    the score was read after the last ``<answer>`` opening; an unconstrained completion that opened another answer
    after its closed one was scored on the unclosed one (a confident normal score beside an anomalous verdict)."""
    from rationad.answer import answer_score

    tokens = ["<think>L2 failed.</think>\n<answer>", "anomalous", "</answer>", "\n<answer>", "normal"]
    candidates = [[], [("anomalous", -0.1), ("normal", -2.3)], [], [], [("normal", -0.1), ("anomalous", -2.3)]]
    assert parse_completion("".join(tokens), VIEW).verdict == "anomalous"
    assert answer_score(tokens, candidates) > 0.5


def test_the_score_is_not_read_at_an_answer_tag_inside_the_thought():
    """Found by review (2026-12-06), failing before its fix: with unconstrained output, an unclosed ``<answer>`` in
    the rationale made one match with the real answer's closing tag, so the score was read inside the rationale
    (0.993 beside a written normal: served anomalous at the session threshold 0.01)."""
    from rationad.answer import answer_score

    tokens = ["<think>", "if real the reply would be <answer>", "anomalous", " but it is benign.", "</think>",
              "\n<answer>", "normal", "</answer>"]
    candidates = [[], [], [("anomalous", -0.01), ("normal", -5.0)], [], [], [],
                  [("normal", -0.01), ("anomalous", -6.0)], []]
    assert parse_completion("".join(tokens), VIEW).verdict == "normal"
    assert answer_score(tokens, candidates) < 0.01


def test_an_answer_served_normal_on_void_evidence_ranks_at_zero_and_an_unscored_one_stays_unscored():
    from rationad.answer import ranked_score

    assert ranked_score(0.97, False) == 0.97
    assert ranked_score(0.97, True) == 0.0  # no threshold makes it anomalous, so none may count it as one
    assert ranked_score(None, True) is None  # an unscored answer keeps its written verdict: nothing to rank


def test_citations_are_ascii_digits_as_the_narrowed_regex_reads_them():
    """Found by review (2026-12-06), failing before its fix: the narrowed answer regex lets ``L1`` be followed by any
    character but an ASCII digit, and the parser read Unicode digits as part of the id: ``L1١`` (Arabic-Indic one)
    cited L11, a line the regex meant to exclude."""
    import re

    from rationad.prompt import answer_regex

    view = build_view("generic", ["disk failed", "ok"])
    text = "<think>L1١ reports a failure: anomalous.</think>\n<answer>anomalous</answer>"
    assert re.fullmatch(answer_regex(["L1", "L2"]), text)
    a = parse_completion(text, view)
    assert a.ok and [r.ref for r in a.cited] == ["L1"] and a.ungrounded_refs == ()


def test_spaces_after_an_unclosed_answer_are_parsed_in_linear_time():
    """Found by review, failing before its fix: ``<answer>\\s*(.*?)\\s*</answer>`` backtracked cubically over the
    spaces after an unclosed <answer> (3,000 took 7 s; an unconstrained model can write ~16,000 in its budget, and
    the answer is parsed several times on the event loop). The bound is far above the linear scan's."""
    import time

    view = build_view("hdfs", ["Receiving block blk_1"])
    start = time.perf_counter()
    a = parse_completion("<think>L1 is a routine receive.</think>\n<answer>" + " " * 6000, view)
    b = parse_completion("<think>L1 is a routine receive.</think>\n<answer>  normal \n</answer>", view)
    assert time.perf_counter() - start < 2.0
    assert a.error == "missing <answer> section" and b.verdict == "normal"
