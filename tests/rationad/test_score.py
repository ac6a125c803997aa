"""Issue 16, item 2: the score (P(anomalous) at the answer word, from logprobs) and the threshold that decides the
verdict, carried from the model clients through the judge, events, template decisions and replay. Fake clients
and recorded logprob shapes; the real vLLM server is checked in tests/integration/test_score.py."""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import httpx
import jsonschema
import orjson
import pytest

from rationad import replay
from rationad.answer import answer_score, parse_completion, thresholded_verdict
from rationad.cache import VerdictCache
from rationad.config import ModelConfig, Settings
from rationad.events import ModelInfo, build_event, build_template_event, encode, schema
from rationad.judge import SCORE_SEP, Judge, cache_value, from_cache
from rationad.labels import Label
from rationad.model import engine, server
from rationad.model.base import SCORE_LOGPROBS, Completion
from rationad.prompt import build_view
from rationad.records import LogLine, Session
from rationad.template_book import TemplateBook
from tests.rationad import test_daemon, test_template_stage
from tests.rationad.fakes import ANOMALOUS, NORMAL, FakeModel

# Logprobs vLLM 0.32 returned at the answer word of a real completion (SmolLM2-135M, rationad 0.2.0, constrained):
# the eight tokens the answer pattern allows there, the rest -inf (masked before the logprobs are computed).
AT_ANSWER = [("normal", -0.38765889), ("an", -1.13765883), ("no", -8.01265907), ("a", -8.01265907),
             ("norm", -9.13765907), ("n", -10.95015907), ("nor", -18.43453407), ("ano", -21.23238564),
             ("<gh_stars>", -math.inf), ("<repo_name>", -math.inf)]
HEAD = ["<think>", "L", "1", " x", "1", " fine", ".</", "think", ">", "\n", "<", "answer", ">"]


@pytest.fixture(autouse=True)
def _undo_daemon_patches():
    """The daemon tests below build daemons with those modules' helpers, which patch Kafka factories."""
    yield
    test_daemon._patch.undo()
    test_template_stage._patch.undo()


def tokens_for(word_tokens: list[str]) -> list[str]:
    return HEAD + word_tokens + ["</", "answer", ">"]


def expected(cands) -> float:
    a = sum(math.exp(lp) for t, lp in cands if t in ("a", "an", "ano"))
    n = sum(math.exp(lp) for t, lp in cands if t in ("n", "no", "nor", "norm", "normal"))
    return a / (a + n)


# ---- the score from logprobs ------------------------------------------------------------------------------------
def test_score_is_the_anomalous_share_of_the_answer_word_tokens():
    toks = tokens_for(["normal"])
    cands = [[(t, 0.0)] for t in toks]
    cands[len(HEAD)] = AT_ANSWER
    got = answer_score(toks, cands)
    assert got == pytest.approx(expected(AT_ANSWER)) and got == pytest.approx(0.3209, abs=1e-4)
    # Renormalising over another allowed set (what the answer constraint does) leaves the score as it was.
    shifted = [(t, lp - 3.0) for t, lp in AT_ANSWER[:3]]
    cands[len(HEAD)] = shifted
    assert answer_score(toks, cands) == pytest.approx(expected(shifted))


def test_score_where_the_answer_word_starts_inside_a_token_and_a_word_missing_from_the_top_k():
    # A tokenizer with ">n" / ">an" tokens: the word starts after the first character of the token.
    toks = HEAD[:-1] + [">an", "omal", "ous", "</", "answer", ">"]
    cands = [[(t, 0.0)] for t in toks]
    cands[len(HEAD) - 1] = [(">an", -0.1), (">n", -2.5), (">", -4.0)]  # ">" alone: another path, not counted
    assert answer_score(toks, cands) == pytest.approx(1 / (1 + math.exp(-2.4)))
    # "normal" absent from the top-k: its mass is bounded by the smallest probability returned.
    cands[len(HEAD) - 1] = [(">an", -0.01), (">a", -7.0)]
    s = answer_score(toks, cands)
    assert 0.99 < s < 1.0 and s == pytest.approx(expected([("an", -0.01), ("a", -7.0), ("n", -7.0)]))


@pytest.mark.parametrize("word", [["Normal"], [" normal"], ["ab", "normal"], ["NORMAL"]])
def test_no_score_when_the_answer_word_is_not_written_as_scored(word):
    """Found by review: without constrained output the model may write "Normal", " normal" or "abnormal", which the
    parser accepts; the score then came from the alternatives it passed over (0.62 for "Normal" here) and the event
    said anomalous while the model wrote normal. Scored only when the word is written as the constraint writes it."""
    toks = tokens_for(word)
    cands = [[(t, 0.0)] for t in toks]
    cands[len(HEAD)] = [(word[0], -0.01), ("an", -9.0), ("n", -9.5)]
    view = build_view("generic", ["a line"])
    assert parse_completion("".join(toks), view).verdict in ("normal", "anomalous")  # a verdict the parser accepts
    assert answer_score(toks, cands) is None


def test_no_score_without_an_answer_or_logprobs():
    assert answer_score(["<think>", "x", "</think>"], [[("x", 0.0)]] * 3) is None
    assert answer_score(tokens_for(["normal"]), []) is None
    toks = tokens_for(["normal"])
    cands = [[(t, 0.0)] for t in toks]
    cands[len(HEAD)] = [("zzz", -0.1)]
    assert answer_score(toks, cands) is None


def test_threshold_decides_the_verdict_and_never_rescues_a_malformed_answer():
    assert thresholded_verdict("normal", 0.3, 0.2) == "anomalous"
    assert thresholded_verdict("anomalous", 0.7, 0.8) == "normal"
    assert thresholded_verdict("anomalous", 0.5, 0.5) == "anomalous"  # at the threshold: anomalous
    assert thresholded_verdict("normal", None, 0.1) == "normal"  # no score: the model's answer
    assert thresholded_verdict(None, 0.9, 0.5) is None


# ---- both backends read their logprobs -----------------------------------------------------------------------------
def test_engine_reads_vllm_sample_logprobs():
    toks = tokens_for(["an", "omal", "ous"])
    ids = list(range(len(toks)))
    logprobs = []
    ids[len(HEAD)] = 101  # "an", the sampled token, is among the top-k under its own id
    for i, t in zip(ids, toks, strict=True):
        top = {i: SimpleNamespace(decoded_token=t, logprob=-0.05)}
        if i == 101:
            top = {100 + k: SimpleNamespace(decoded_token=c, logprob=lp) for k, (c, lp) in enumerate(AT_ANSWER)}
        logprobs.append(top)
    assert engine._score(ids, logprobs) == pytest.approx(expected(AT_ANSWER))
    assert engine._score(ids, None) is None
    params = engine.EngineClient.__new__(engine.EngineClient)
    params._seed_requests = False
    assert params._sampling(64, 0.0, None).logprobs == SCORE_LOGPROBS


def chat_logprobs(toks: list[str], at: int, cands) -> dict:
    content = []
    for i, t in enumerate(toks):
        top = [{"token": c, "logprob": max(lp, -9999.0), "bytes": None} for c, lp in cands] if i == at else []
        content.append({"token": t, "logprob": -0.01, "bytes": None, "top_logprobs": top})
    return {"content": content}


async def test_server_asks_for_logprobs_and_reads_the_score():
    toks = tokens_for(["normal"])
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        return httpx.Response(200, json={"choices": [{"message": {"content": "".join(toks)},
                                                      "logprobs": chat_logprobs(toks, len(HEAD), AT_ANSWER)}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": len(toks)}})

    client = server.ServerClient(ModelConfig(backend="vllm-server", server_url="http://m", served_model_name="m"),
                                 transport=httpx.MockTransport(handler))
    try:
        [c] = await client.generate([[{"role": "user", "content": "x"}]], max_tokens=8, temperature=0.0, regex=None)
    finally:
        await client.aclose()
    assert seen[0]["logprobs"] is True and seen[0]["top_logprobs"] == SCORE_LOGPROBS
    assert c.score == pytest.approx(expected(AT_ANSWER))  # -inf came back as -9999: no mass either way
    assert server._score(None) is None and server._score({"content": [{"x": 1}]}) is None


def test_a_continued_answer_is_scored_at_its_first_generated_token():
    """After a cut rationale the model continues ``...<answer>``: the word starts at the first generated token."""
    prefix = "".join(HEAD)
    toks = ["an", "omal", "ous", "</", "answer", ">"]
    ids = list(range(200, 200 + len(toks)))
    logprobs = [{200 + k: SimpleNamespace(decoded_token=c, logprob=lp) for k, (c, lp) in enumerate(AT_ANSWER)}]
    logprobs += [{i: SimpleNamespace(decoded_token=t, logprob=-0.01)} for i, t in zip(ids[1:], toks[1:], strict=True)]
    ids[0] = 201  # "an" is AT_ANSWER[1]
    assert engine._score(ids, logprobs, prefix) == pytest.approx(expected(AT_ANSWER))
    assert engine._score(ids, logprobs) is None  # without the prefix there is no <answer> to read it after


async def test_server_continues_a_final_assistant_message_and_returns_the_whole_answer():
    prefix = "".join(HEAD)
    toks = ["normal", "</", "answer", ">"]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "".join(toks)},
                                                      "logprobs": chat_logprobs(toks, 0, AT_ANSWER)}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": len(toks)}})

    client = server.ServerClient(ModelConfig(backend="vllm-server", server_url="http://m", served_model_name="m"),
                                 transport=httpx.MockTransport(handler))
    conv = [{"role": "user", "content": "x"}, {"role": "assistant", "content": prefix}]
    try:
        [c] = await client.generate([conv], max_tokens=8, temperature=0.0, regex="(normal|anomalous)</answer>")
        [fresh] = await client.generate([conv[:1]], max_tokens=8, temperature=0.0, regex=None)
    finally:
        await client.aclose()
    assert seen[0]["continue_final_message"] is True and seen[0]["add_generation_prompt"] is False
    assert "continue_final_message" not in seen[1] and "add_generation_prompt" not in seen[1]
    assert c.text == prefix + "normal</answer>"
    assert c.score == pytest.approx(expected(AT_ANSWER))
    assert fresh.text == "normal</answer>"


# ---- judge and cache -------------------------------------------------------------------------------------------
class ScoredModel(FakeModel):
    """FakeModel whose completions carry a score: ``score(prompt_text) -> float | None``."""

    def __init__(self, score, answer=None) -> None:
        super().__init__(answer)
        self.score = score

    async def generate(self, conversations, *, max_tokens, temperature, regex):
        out = await super().generate(conversations, max_tokens=max_tokens, temperature=temperature, regex=regex)
        return [Completion(c.text, c.prompt_tokens, c.completion_tokens, self.score(conv[-1]["content"]))
                for c, conv in zip(out, conversations, strict=True)]


def session(key: str, messages: list[str]) -> Session:
    return Session(key=key, lines=[LogLine(key=key, message=m, raw=m, offset=i) for i, m in enumerate(messages)],
                   close_reason="gap", topic="t")


async def test_judgement_carries_the_score_and_a_cache_hit_keeps_it():
    model = ScoredModel(lambda text: 0.83 if "ERROR" in text else 0.04)
    judge = Judge(model, ModelConfig(), "hdfs", cache=VerdictCache(10))
    bad, ok = await judge.judge_many([session("a", ["ERROR x failed"]), session("b", ["INFO fine"])])
    assert (bad.score, ok.score) == (0.83, 0.04) and not bad.cached
    assert bad.verdict_at(0.9) == "normal" and bad.verdict_at(0.5) == "anomalous" and ok.verdict_at(0.03) == "anomalous"
    [hit] = await judge.judge_many([session("c", ["ERROR x failed"])])
    assert hit.cached and hit.score == 0.83 and model.calls == 1
    assert hit.answer.verdict == "anomalous"  # the suffix does not disturb parsing


def test_cache_values_with_and_without_a_score():
    assert from_cache(cache_value(ANOMALOUS, 0.25)) == (ANOMALOUS, 0.25)
    assert from_cache(ANOMALOUS) == (ANOMALOUS, None)  # written before scores existed
    assert from_cache(cache_value(NORMAL, None)) == (NORMAL, None)
    assert from_cache(NORMAL + SCORE_SEP + "nan?") == (NORMAL + SCORE_SEP + "nan?", None)
    view = build_view("hdfs", ["x"])
    assert parse_completion(cache_value(ANOMALOUS, 0.9), view).verdict == "anomalous"  # an older reader


# ---- events --------------------------------------------------------------------------------------------------
def test_session_event_follows_the_threshold_and_records_the_model_answer():
    s = session("blk_1", ["INFO a: start", "WARN b: exception while serving"])
    view = build_view("hdfs", [line.message for line in s.lines])
    a = parse_completion("<think>L2 reports an exception.</think><answer>normal</answer>", view)
    validator = jsonschema.Draft202012Validator(schema())
    e = build_event(s, view, a, ModelInfo("m", "1"), cached=False, now=0, score=0.31, threshold=0.2)
    validator.validate(orjson.loads(encode(e)))
    assert (e["verdict"], e["model_verdict"], e["score"], e["threshold"]) == ("anomalous", "normal", 0.31, 0.2)
    e = build_event(s, view, a, ModelInfo("m", "1"), cached=False, now=0, threshold=0.2)
    validator.validate(e)
    assert (e["verdict"], e["score"], e["threshold"]) == ("normal", None, None)
    e["score"] = 1.5
    assert not validator.is_valid(e)


def judged_book(threshold: float) -> tuple[TemplateBook, Session]:
    book = TemplateBook()
    s = Session(key="w", lines=[LogLine(key="w", message=m, raw=m, offset=i) for i, m in
                                enumerate(["INFO ok 1", "WARN retry 2", "ERROR disk 3"])], close_reason="window_full",
                topic="logs")
    for u, (answer, score) in zip(book.uses(s), [("normal", 0.02), ("normal", 0.35), ("anomalous", 0.6)],
                                  strict=True):
        verdict = thresholded_verdict(answer, score, threshold)
        book.judged(u.state.template, verdict, f"{answer} because", score=score, answer_verdict=answer,
                    problems=("quote: 'fan' is in no line of the session",) if answer == "anomalous" else ())
    return book, s


def test_window_score_is_the_maximum_of_its_templates_and_a_label_counts_one_or_zero():
    book, s = judged_book(0.7)
    d = book.decide(book.uses(s))
    assert (d.verdict, d.model_verdict, d.score) == ("normal", "anomalous", 0.6)
    book, s = judged_book(0.3)
    d = book.decide(book.uses(s))
    assert (d.verdict, d.model_verdict, d.score) == ("anomalous", "anomalous", 0.6)
    e = build_template_event(s, d, ModelInfo("m"), source="generic", threshold=0.3, now=0)
    jsonschema.Draft202012Validator(schema()).validate(orjson.loads(encode(e)))
    shown = {t["template"]: (t["verdict"], t["model_verdict"], t["score"]) for t in e["templates"]}
    # the anomalous template, and the one the threshold turned anomalous though the model wrote "normal"
    assert shown == {"WARN retry {*}": ("anomalous", "normal", 0.35), "ERROR disk {*}": ("anomalous", "anomalous", 0.6)}
    assert (e["score"], e["threshold"], e["model_verdict"]) == (0.6, 0.3, "anomalous")
    assert {t["template"]: t["rationale_problems"] for t in e["templates"]} == {  # each template's own
        "WARN retry {*}": [], "ERROR disk {*}": ["quote: 'fan' is in no line of the session"]}
    disk = next(u.state for u in book.uses(s) if u.state.template == "ERROR disk {*}")
    book.set_label(disk.id, Label(disk.template, "normal", "expected", "ops", 0.0))
    d = book.decide(book.uses(s))
    assert d.score == 0.35 and d.verdict == "anomalous" and d.model_verdict == "normal"
    book, s = judged_book(0.7)
    disk = next(u.state for u in book.uses(s) if u.state.template == "ERROR disk {*}")
    book.set_label(disk.id, Label(disk.template, "anomalous", "real", "ops", 0.0))
    assert book.decide(book.uses(s)).score == 1.0


# ---- the daemon: thresholds per level ----------------------------------------------------------------------------
async def test_daemon_session_events_use_threshold_session():
    s = test_daemon.settings(judge={"level": "session", "threshold_session": 0.2})
    model = ScoredModel(lambda text: 0.9 if "ERROR" in text else (0.25 if "WARN" in text else 0.01))
    lines = ["session=a INFO ok", "session=a INFO ok", "session=b WARN slow", "session=b WARN slow",
             "session=c ERROR failed", "session=c ERROR failed"]
    d, _, producer = test_daemon.make(s, [test_template_stage.recs(lines)], model=model)
    await test_daemon.run_until(d, lambda: len(producer.on(s.output.topic)) == 3)
    evs = {e["session"]["key"]: e for e in (orjson.loads(x.value) for x in producer.on(s.output.topic))}
    got = {k: (e["verdict"], e["model_verdict"], e["score"], e["threshold"]) for k, e in evs.items()}
    assert got == {"a": ("normal", "normal", 0.01, 0.2), "b": ("anomalous", "normal", 0.25, 0.2),
                   "c": ("anomalous", "anomalous", 0.9, 0.2)}


async def test_daemon_judges_a_session_cut_by_max_open_at_threshold_unfinished():
    """An unfinished session (cut by max_open_secs while its key is still open) is flagged only at
    ``threshold_unfinished``; the same scores on sessions that ended are judged at ``threshold_session``."""
    s = test_daemon.settings(judge={"level": "session", "threshold_session": 0.2, "threshold_unfinished": 0.6},
                             sessions={"mode": "session", "gap_secs": 1_000, "max_open_secs": 0.2,
                                       "quiet_flush_secs": 600},
                             input={"repartition": "never"}, output={"emit_normal": True})
    model = ScoredModel(lambda text: 0.9 if "ERROR" in text else (0.25 if "WARN" in text else 0.01))
    lines = ["session=b WARN slow", "session=b WARN slow", "session=c ERROR failed", "session=c ERROR failed"]
    d, _, producer = test_daemon.make(s, [test_template_stage.recs(lines)], model=model)
    await test_daemon.run_until(d, lambda: len(producer.on(s.output.topic)) == 2)
    evs = {e["session"]["key"]: e for e in (orjson.loads(x.value) for x in producer.on(s.output.topic))}
    got = {k: (e["session"]["close_reason"], e["verdict"], e["model_verdict"], e["threshold"]) for k, e in evs.items()}
    # b scores 0.25: anomalous at threshold_session (0.2, the test above), normal while unfinished.
    assert got == {"b": ("max_open", "normal", "normal", 0.6), "c": ("max_open", "anomalous", "anomalous", 0.6)}
    assert s.judge.session_threshold(False) == 0.2 and s.judge.session_threshold(True) == 0.6


async def test_daemon_template_windows_use_threshold_template():
    s = test_template_stage.settings(output={"emit_normal": True}, judge={"threshold_template": 0.9})
    model = ScoredModel(lambda text: 0.8 if "ERROR" in text else 0.05)
    lines = ["INFO served request 1", "ERROR disk sda1 failed", "INFO served request 2"]
    d, _, producer = test_template_stage.make(s, [test_template_stage.recs(lines)], model=model)
    await test_daemon.run_until(d, lambda: len(test_template_stage.events(producer, s)) == 1)
    [e] = test_template_stage.events(producer, s)
    assert (e["verdict"], e["model_verdict"], e["score"], e["threshold"]) == ("normal", "anomalous", 0.8, 0.9)
    [t] = e["templates"]  # shown: the threshold disagrees with the model's answer
    assert (t["verdict"], t["model_verdict"], t["score"]) == ("normal", "anomalous", 0.8)


def test_thresholds_are_checked_and_default_to_the_validation_choice():
    # BENCHMARKS.md section 11: session level from HDFS validation's best F1; template level the model's own answer.
    assert Settings().judge.threshold("session") == 0.0007 and Settings().judge.threshold("template") == 0.5
    assert Settings().judge.session_threshold(True) == 0.5  # the model's own answer: BENCHMARKS.md section 13
    assert Settings(judge={"threshold_template": 0.3}).judge.threshold("template") == 0.3
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError):
            Settings(judge={"threshold_session": bad})


# ---- replay: scores out, PR operating points -----------------------------------------------------------------------
def test_pr_curve_operating_points_and_best_f1():
    pairs = [(0.9, True), (0.8, True), (0.7, False), (0.4, True), (0.4, False), (0.1, False)]
    curve = replay.pr_curve(pairs)
    assert [(p.threshold, p.tp, p.fp) for p in curve] == [(0.9, 1, 0), (0.8, 2, 0), (0.7, 2, 1), (0.4, 3, 2),
                                                            (0.1, 3, 3)]
    point, threshold = replay.best_f1(curve)
    assert (point.threshold, point.f1) == (0.8, 0.8) and threshold == pytest.approx(0.75)
    p = replay.at_threshold(curve, 0.5, 3, 3)
    assert (p.tp, p.fp, p.fn, p.tn) == (2, 1, 1, 2)
    assert replay.at_threshold(curve, 0.95, 3, 3).flagged == 0
    assert replay.average_precision(curve) == pytest.approx(1 / 3 + 1 / 3 + (1 / 3) * 0.6)
    table = replay.operating_points_table(pairs, 0.5)
    assert "best F1" in table and "configured" in table and "average precision 0.8667" in table


async def test_replay_writes_scores_and_decides_at_the_threshold(tmp_path):
    sessions = [session(f"s{i}", [m]) for i, m in enumerate(["ERROR a", "WARN b", "INFO c", "INFO d"])]
    for s, label in zip(sessions, ["anomalous", "anomalous", "normal", "normal"], strict=True):
        s.label = label
    score = {"ERROR": 0.95, "WARN": 0.3, "INFO": 0.02}
    model = ScoredModel(lambda text: next(v for k, v in score.items() if k in text))
    out = io.BytesIO()
    scores, _ = await replay.judge_sessions(sessions, ModelConfig(), "hdfs", out, use_cache=False, client=model,
                                            threshold=0.25)
    recs = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert [(r["verdict"], r["model_verdict"], r["score"]) for r in recs] == [
        ("anomalous", "anomalous", 0.95), ("anomalous", "normal", 0.3), ("normal", "normal", 0.02),
        ("normal", "normal", 0.02)]
    summary = scores.summary()
    assert summary["f1"] == 1.0 and summary["scored"] == 4 and summary["best_f1"] == 1.0
    assert 0.02 < summary["best_f1_threshold"] < 0.3
    path = tmp_path / "pr.csv"
    replay.write_curve(path, scores.pairs)
    assert path.read_text().splitlines()[0].startswith("threshold,precision,recall")


async def test_template_replay_window_score_is_its_highest_template(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("INFO ok 1\nWARN slow 2\nINFO ok 3\nINFO ok 4\n")
    labels = {"1": "normal", "2": "anomalous", "3": "normal", "4": "normal"}
    sessions = replay.sessions_from_log(path, "generic", test_template_stage.settings().sessions.model_copy(
        update={"window_lines": 2}), test_template_stage.settings().input, replay.Skipped(), labels)
    model = ScoredModel(lambda text: 0.4 if "WARN" in text else 0.1)
    out = io.BytesIO()
    scores, calls = await replay.judge_by_template(sessions, ModelConfig(), "generic", out, use_cache=False,
                                                   client=model, threshold=0.3)
    recs = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert [(r["verdict"], r["model_verdict"], r["score"]) for r in recs] == [("anomalous", "normal", 0.4),
                                                                             ("normal", "normal", 0.1)]
    assert calls == 2 and scores.pairs == [(0.4, True), (0.1, False)]
