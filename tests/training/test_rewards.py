"""The GRPO reward parts on hand-made completions."""

from training import rewards as R

SESSION = ('Log source: hdfs\nThe session has 5 lines and 2 distinct templates, listed in order of first appearance '
           'with their counts:\nL1 x3 "INFO dfs.DataNode$DataXceiver: Receiving block {*} src: {*} dest: {*}"\n'
           'L2 x2 "INFO dfs.DataNode$PacketResponder: Received block {*} of size {*} from {*}"\n'
           'Is this session normal or anomalous?')  # the user message, as the GRPO rows carry it
REF = "L1 and L2: 3 receive starts but 2 completions: a replica was never fully received."


def cols(label="anomalous", n=2, k=1):
    return {"label": [label] * k, "reference": [REF] * k, "session": [SESSION] * k, "n_refs": [n] * k}


def one(func, completion, **kw):
    return func([None], [completion], **cols(**kw))[0]


GOOD = f"<think>{REF}</think>\n<answer>anomalous</answer>"
WRONG = "<think>L1 starts 3 replica writes; all completed.</think>\n<answer>normal</answer>"
NO_THINK = "<answer>anomalous</answer>"
GARBAGE = "<think>x</think><answer>maybe</answer>"


def test_format_rewards_both_sections_and_penalizes_otherwise():
    assert one(R.format_reward, GOOD) == R.FORMAT_OK
    assert one(R.format_reward, NO_THINK) == R.FORMAT_BAD
    assert one(R.format_reward, GARBAGE) == R.FORMAT_BAD


def test_nothing_else_counts_when_format_fails():
    for f in (R.answer_reward, R.grounding_reward, R.brevity_reward):
        assert one(f, NO_THINK) == 0.0


def test_answer_is_asymmetric():
    tp = one(R.answer_reward, GOOD, label="anomalous")
    fn = one(R.answer_reward, WRONG, label="anomalous")
    tn = one(R.answer_reward, WRONG, label="normal")
    fp = one(R.answer_reward, GOOD, label="normal")
    assert tp > tn > 0 > fp > fn


def test_unparseable_costs_at_least_as_much_as_any_wrong_answer():
    worst_wrong = min(R.total([None], [WRONG], **cols("anomalous")) + R.total([None], [GOOD], **cols("normal")))
    assert R.total([None], [GARBAGE], **cols())[0] <= worst_wrong


def test_grounding_rewards_overlap_and_penalizes_absent_lines():
    grounded = one(R.grounding_reward, GOOD)
    vague = one(R.grounding_reward, "<think>something is off with the cluster today</think>\n<answer>anomalous</answer>")
    absent = one(R.grounding_reward, "<think>L1 and L7: 3 receive starts but 2 completions.</think>\n"
                                     "<answer>anomalous</answer>")
    assert grounded > vague >= 0
    assert absent < grounded - 0.4  # L7 is not in a 2-row session


def test_grounding_penalizes_what_the_session_refutes():
    true = one(R.grounding_reward, GOOD)
    false = one(R.grounding_reward, "<think>L1 x4 receive start, L2 x2 received. L1 and L2: 3 receive starts but 1 "
                                    "completions: a replica was never fully received.</think>\n<answer>anomalous</answer>")
    assert false < true - 2 * R.UNFAITHFUL_PENALTY + 0.3  # a count and a pair the session does not have
    trained_only = one(R.grounding_reward, "<think>L1 and L2: 3 receive starts but 2 completions: judged anomalous "
                                           "from the expert label for this template.</think>\n<answer>anomalous</answer>")
    assert trained_only < true - R.UNFAITHFUL_PENALTY + 0.3


def test_grounding_and_brevity_count_only_right_answers():
    assert one(R.grounding_reward, GOOD, label="normal") == 0.0
    assert one(R.brevity_reward, GOOD, label="normal") == 0.0


def test_brevity_is_distance_from_reference_length():
    exact = one(R.brevity_reward, GOOD)
    long = one(R.brevity_reward, f"<think>{REF} {REF} {REF}</think>\n<answer>anomalous</answer>")
    assert exact == 1.0 and 0.0 <= long < 0.1


def test_conversational_completions_and_registry():
    msg = [{"role": "assistant", "content": GOOD}]
    assert R.format_reward([None], [msg], **cols()) == [R.FORMAT_OK]
    funcs, weights = R.get(["format", "answer"])
    assert funcs == [R.format_reward, R.answer_reward] and weights == [1.0, 1.0]
    try:
        R.get(["nope"])
    except KeyError as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("unknown reward accepted")


def test_the_references_words_in_another_order_do_not_pay_like_the_reference(hdfs_examples):
    """Found by review (2026-12-06), failing before its fix: grounding counted single words, so a word salad of the
    reference's vocabulary, padded to its length, scored about as well as the reference (better on 23% of the SFT
    rows): GRPO could not tell a true rationale from a meaningless one."""
    import re

    from rationad.prompt import user_message
    from training.rationales import hdfs_rationale
    from training.rewards import brevity_reward, grounding_reward

    beaten, margins = 0, []
    for ex in hdfs_examples[:60]:
        ref = hdfs_rationale(ex.view, ex.label).think
        words = sorted(set(re.findall(r"[A-Za-z]+", ref)), key=len, reverse=True)
        salad = ((" ".join(words) + " ") * (len(ref) // max(1, len(" ".join(words))) + 1))[: len(ref)]
        cols = {"label": [ex.label] * 2, "reference": [ref] * 2, "session": [user_message(ex.view)] * 2,
                "n_refs": [len(ex.view.rows)] * 2}
        comps = [f"<think>{t}</think>\n<answer>{ex.label}</answer>" for t in (ref, salad)]
        g, b = grounding_reward(None, comps, **cols), brevity_reward(None, comps, **cols)
        true_part, salad_part = (0.5 * (g[i] + b[i]) for i in range(2))
        beaten += salad_part >= true_part
        margins.append(true_part - salad_part)
    assert beaten <= 3 and sum(margins) / len(margins) > 0.15, (beaten, sum(margins) / len(margins))


def test_true_statements_about_labelled_neighbours_are_not_refuted():
    """Found by review (2026-12-07): the reward read the prompt back without its labelled neighbours, so every
    "Similar known templates: N1 anomalous" was judged to cite a neighbour the prompt never showed (-0.5 each):
    GRPO with neighbours would have learnt to stop citing them, while the daemon's checker accepts them."""
    from dataclasses import replace

    from rationad.faithful import problems
    from rationad.prompt import Neighbour, build_view, user_message, view_from_message

    view = replace(build_view("bgl", ["ciod: failed to read message prefix on control stream"], templated=True),
                   neighbours=(Neighbour("N1", 'ciod: failed to read "message" {*}', "anomalous", "jobs fail"),
                               Neighbour("N2", "ciod: generated {*} core files", "normal", "routine dump")))
    text = user_message(view)
    back = view_from_message(text)
    assert [(n.ref, n.label, n.reason) for n in back.neighbours] == [("N1", "anomalous", "jobs fail"),
                                                                     ("N2", "normal", "routine dump")]
    assert user_message(back) == text
    rationale = "L1 x1: the job's control stream failed. Similar known templates: N1 anomalous, N2 normal."
    assert problems(rationale, view) == problems(rationale, back) == []
    cols = {"label": ["anomalous"], "reference": [rationale], "session": [text], "n_refs": [1]}
    [reward] = R.grounding_reward(None, [f"<think>{rationale}</think>\n<answer>anomalous</answer>"], **cols)
    assert reward > 0.5


def test_the_reference_s_ignored_text_on_injection_rows_is_not_refuted(hdfs_examples):
    """Found by review, failing before its fix: the reward read the prompt back, where no row is marked as text
    addressed to the model, so the SFT target's true "L2 x1 ignored text" on every injection-hardening row was judged
    refuted (-0.5 each): GRPO paid the model to call those rows unknown instead."""
    from rationad.prompt import user_message
    from training.data_injection import injected_copies
    from training.rationales import hdfs_rationale
    from training.rewards import grounding_reward

    copies = injected_copies(hdfs_examples[:200], 1.0)[:20]
    assert copies
    for ex in copies:
        ref = hdfs_rationale(ex.view, ex.label, tuple(ex.extra["injected_refs"])).think
        assert "ignored text" in ref
        cols = {"label": [ex.label] * 2, "reference": [ref] * 2, "session": [user_message(ex.view)] * 2,
                "n_refs": [len(ex.view.rows)] * 2}
        comps = [f"<think>{t}</think>\n<answer>{ex.label}</answer>" for t in (ref, ref.replace("ignored text",
                                                                                                 "unknown"))]
        kept, unlearned = grounding_reward(None, comps, **cols)
        assert kept > unlearned, (ref, kept, unlearned)


def test_grounding_checks_citations_against_the_row_ids_the_prompt_shows():
    """Found by review (2026-12-07), failing before its fix: the reward read citations against ids L1..n_refs, but a
    prompt with rows dropped for the budget shows ids with gaps (here L1, L2 and L5), as the daemon serves them: citing
    the kept L5 was charged as ungrounded and citing the dropped L3 was paid."""
    gapped = SESSION.replace("L2 x2", "L5 x2").replace("2 distinct templates", "3 distinct templates") \
        .replace('Is this session', '[1 more templates (1 lines) omitted to fit the budget]\nIs this session')
    gapped = gapped.replace('L1 x3 "INFO dfs.DataNode$DataXceiver: Receiving block {*} src: {*} dest: {*}"\n',
                            'L1 x3 "INFO dfs.DataNode$DataXceiver: Receiving block {*} src: {*} dest: {*}"\n'
                            'L2 x1 "INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: {*}"\n')
    columns = {"label": ["anomalous"], "reference": [REF.replace("L2", "L5")], "session": [gapped], "n_refs": [3]}

    def reward(ref: str) -> float:
        text = f"<think>L1 and {ref}: 3 receive starts but 2 completions.</think>\n<answer>anomalous</answer>"
        return R.grounding_reward([None], [text], **columns)[0]

    assert reward("L5") > reward("L3") + R.UNGROUNDED_PENALTY - 0.3
