"""The score on the real model (issue 16, item 2): through the OpenAI-compatible vLLM server on CPU, every
well-formed constrained answer comes back with a score in [0, 1] (P(anomalous) at the answer word, from the
server's logprobs), and at threshold 0.5 the score agrees with the greedy answer the model wrote: both read the
same token distribution at the same position, so a disagreement would mean the score was read at the wrong token.
The same holds through the Judge (cache hits keep the score) for sessions and templates."""

from __future__ import annotations

import pytest

from rationad.answer import CUT_MARK
from rationad.cache import VerdictCache
from rationad.config import ModelConfig
from rationad.judge import Judge
from rationad.metrics import Metrics
from rationad.model.server import ServerClient
from rationad.records import LogLine, Session
from rationad.template_book import template_session

pytestmark = pytest.mark.integration

SESSIONS = [
    ["Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010",
     "Received block blk_-1608999687919862906 of size 91178 from /10.250.19.102",
     "PacketResponder 1 for block blk_-1608999687919862906 terminating"],
    ["Receiving block blk_7503483334202473044 src: /10.251.215.16:55695 dest: /10.251.215.16:50010",
     "Exception in receiveBlock for block blk_7503483334202473044 java.io.IOException: Connection reset by peer",
     "writeBlock blk_7503483334202473044 received exception java.io.IOException: Connection reset by peer"],
    ["BLOCK* NameSystem.allocateBlock: /user/root/rand/_temporary/part-00000. blk_-3544583377289625738",
     "Deleting block blk_-3544583377289625738 file /mnt/hadoop/dfs/data/current/subdir19/blk_-3544583377289625738"],
]
IPS = ("10.250.19.102", "10.251.215.16", "10.251.71.68")
LIFECYCLE = ["BLOCK* NameSystem.allocateBlock: /user/root/rand/_temporary/part-00000. blk_-1608999687919862906",
             *[f"Receiving block blk_-1608999687919862906 src: /{ip}:54106 dest: /{ip}:50010" for ip in IPS],
             *[f"Received block blk_-1608999687919862906 of size 91178 from /{ip}" for ip in IPS],
             *[f"PacketResponder {n} for block blk_-1608999687919862906 terminating" for n in range(3)],
             *[f"BLOCK* NameSystem.addStoredBlock: blockMap updated: {ip}:50010 is added to blk_-1608999687919862906 "
               "size 91178" for ip in IPS]]
TEMPLATES = ["RAS KERNEL FATAL data TLB error interrupt", "instruction cache parity error corrected",
             "generating core.{*}", "ciod: LOGIN chdir(/p/gb1/stella/RAPTOR/{*}) failed: No such file or directory"]


def session(i: int, lines: list[str]) -> Session:
    key = f"blk_{i}"
    return Session(key=key, lines=[LogLine(key=key, message=m, raw=m, offset=n) for n, m in enumerate(lines)],
                   close_reason="gap", topic="logs")


async def started_client(vllm_server, *, max_new_tokens: int) -> tuple[ModelConfig, ServerClient]:
    cfg = ModelConfig(backend="vllm-server", server_url=vllm_server.url, served_model_name="rationad",
                      path=vllm_server.model, max_new_tokens=max_new_tokens, max_prompt_tokens=1024,
                      max_model_len=2048, request_timeout_secs=600)
    client = ServerClient(cfg)
    await client.start()
    return cfg, client


async def test_scores_are_probabilities_that_agree_with_the_greedy_answer_at_one_half(vllm_server):
    cfg, client = await started_client(vllm_server, max_new_tokens=768)
    try:
        judge = Judge(client, cfg, "hdfs", cache=VerdictCache(100))
        got = await judge.judge_many([session(i, s) for i, s in enumerate(SESSIONS)])
        bgl = Judge(client, cfg, "bgl", cache=None)
        got += await bgl.judge_many([template_session(t) for t in TEMPLATES])
        answered = [j for j in got if j.ok]
        assert len(answered) >= 4, [j.answer.error for j in got]
        for j in answered:
            assert j.score is not None and 0.0 <= j.score <= 1.0, (j.session.key, j.score)
            assert j.verdict_at(0.5) == j.answer.verdict, (j.session.key, j.score, j.answer.verdict)
        print("scores:", [(j.session.key, j.answer.verdict, round(j.score, 4)) for j in answered])
        [again] = await judge.judge_many([session(9, SESSIONS[0])])  # the same session: a cache hit
        first = got[0]
        if first.ok:
            assert again.cached and again.score == first.score
    finally:
        await client.aclose()


async def test_a_rationale_cut_by_the_token_budget_is_answered_not_dead_lettered(vllm_server):
    """With a budget (48 tokens, the least the config allows) below the length of the trained rationale of a whole
    write lifecycle (a walk of its five rows and a tally, ~90 tokens) the answer runs out of tokens inside <think>.
    Before close_cut_thought it was malformed (twice) and dead-lettered; now it is answered from its rationale's last
    complete sentence or clause, through the server's continue_final_message, with a score read at the answer word,
    and every session has a verdict. (The first session of ``SESSIONS``, a three-line piece, no longer serves: 0.2.1
    walked it in ~60 tokens, 0.3.1 writes ~40.) The model writes its own walk here (``write_walk=False``): the
    daemon's walk leaves it a few sentences, which this budget does not cut.

    The cut is read from ``rationad_rationales_cut_total`` (counted where a cut answer parsed), not only from the
    served rationales: a cut rationale the checker refutes is written again, and what is served then is the rewrite
    (one CI machine's numerics wrote the lifecycle's walk so, and no served rationale ended with the cut mark)."""
    cfg, client = await started_client(vllm_server, max_new_tokens=48)
    metrics = Metrics()
    try:
        got = await Judge(client, cfg, "hdfs", cache=None, write_walk=False, metrics=metrics).judge_many(
            [session(i, s) for i, s in enumerate([LIFECYCLE, *SESSIONS])])
    finally:
        await client.aclose()
    cut = [j for j in got if j.answer.rationale.endswith(CUT_MARK.strip())]
    print("cut:", [(j.session.key, j.answer.verdict, j.answer.rationale, j.score, j.attempts) for j in got])
    assert all(j.ok for j in got), [(j.answer.error, j.answer.raw) for j in got]
    assert metrics.rationales_cut._value.get() >= 1, [j.answer.raw for j in got]
    for j in cut:  # cut on the first answer, or on the grounding repair or the rewrite that followed it
        assert j.ok and j.answer.grounded and j.attempts <= 3, j.answer.raw
        assert j.score is not None and j.verdict_at(0.5) == j.answer.verdict, (j.answer.raw, j.score)


async def test_the_real_model_continues_the_walk_the_daemon_writes(vllm_server):
    """The default model (0.3.2, ``+walk`` in its manifest) is given each HDFS session's walk and tally
    (``rationad.facts``) and writes the rest: every answer parses, its rationale starts with the daemon's walk, cites
    only the session's lines and has a score that agrees with the written answer; a whole lifecycle is normal and the
    block whose write failed with an exception anomalous, as the model answers when it writes the walk itself."""
    from rationad.facts import evidence

    cfg, client = await started_client(vllm_server, max_new_tokens=256)
    try:
        judge = Judge(client, cfg, "hdfs", cache=None)
        assert judge.write_walk, "the default model's manifest names +walk"
        got = await judge.judge_many([session(i, s) for i, s in enumerate([LIFECYCLE, *SESSIONS])])
        own = await Judge(client, cfg, "hdfs", cache=None, write_walk=False).judge_many(
            [session(i, s) for i, s in enumerate([LIFECYCLE, *SESSIONS])])
    finally:
        await client.aclose()
    print("walked:", [(j.session.key, j.answer.verdict, j.answer.rationale, j.score) for j in got])
    for j in got:
        assert j.ok and j.answer.grounded, j.answer.raw
        assert j.answer.raw.startswith(evidence(j.view)), (j.answer.raw, evidence(j.view))
        assert j.score is not None and j.verdict_at(0.5) == j.answer.verdict, (j.answer.raw, j.score)
    assert got[0].answer.verdict == own[0].answer.verdict == "normal"
    assert got[2].answer.verdict == own[2].answer.verdict == "anomalous"


async def test_the_real_server_holds_a_rewrite_to_the_verdict_it_is_given(vllm_server):
    """A rationale code refutes is written again held to the first answer's verdict (``rationad.prompt.answer_words``):
    on the real server the held regexes compile and hold, even against what the model would answer (a whole
    lifecycle held to anomalous, a failed write to normal), for a whole answer after the daemon's walk and for the
    answer word closing a cut rationale."""
    from rationad.answer import parse_completion

    cfg, client = await started_client(vllm_server, max_new_tokens=256)
    try:
        judge = Judge(client, cfg, "hdfs", cache=None)
        views = [judge.view(session(i, s)) for i, s in enumerate([LIFECYCLE, SESSIONS[1]])]
        held = ["anomalous", "normal"]
        written = await judge._generate(views, 0.7, narrow=True, answers=held)
        closed = await judge._generate(views, 0.0, prefixes=["<think>L1 shows a block." + CUT_MARK + "</think>\n"
                                                             "<answer>"] * 2, answers=held)
    finally:
        await client.aclose()
    print("held:", [c.text for c in written], [c.text for c in closed])
    # Sampled at 0.7 as the daemon writes again, a rewrite may run to the token budget before it answers (CI,
    # 2026-12-07: "the write pipeline failed: " repeated to 256 tokens): no verdict then, which the daemon answers
    # at the cut (``closed`` below, greedy). One that answers holds the verdict it is given, and one of the two must.
    got = [parse_completion(c.text, v).verdict for c, v in zip(written, views, strict=True)]
    assert all(g in (h, None) for g, h in zip(got, held, strict=True)) and any(g is not None for g in got), got
    assert all(g is not None or "<answer>" not in c.text for g, c in zip(got, written, strict=True))
    assert [c.text.rsplit("<answer>", 1)[1] for c in closed] == [f"{h}</answer>" for h in held]


async def test_the_real_server_answers_the_model_stage_probe(vllm_server):
    """The model stage's probe (``Judge.probe_request``) is shaped like a real request, a continued walk included:
    the real server must answer it, or every session failing for its own content would pause the daemon instead."""
    from rationad.model_stage import PROBE_TOKENS

    cfg, client = await started_client(vllm_server, max_new_tokens=256)
    try:
        for source, templated in (("hdfs", False), ("bgl", False), ("bgl", True)):
            judge = Judge(client, cfg, source, cache=None)
            conversation, regex = judge.probe_request(templated=templated)
            assert regex is not None and conversation[0]["role"] == "system"
            # the daemon's walk, or a template's rule sentence, continued
            assert (conversation[-1]["role"] == "assistant") == (source == "hdfs" or templated)
            [done] = await client.generate([conversation], max_tokens=PROBE_TOKENS, temperature=0.0, regex=regex)
            assert done.text.startswith("<think>"), done.text
    finally:
        await client.aclose()
