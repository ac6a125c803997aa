"""The facts a rationale starts with written by the daemon against written by the model (``rationad.facts``): same
model, same engine, same prompts.

A model trained with ``+walk`` and ``+rule`` (its manifest's prompt version; 0.3.2) starts every HDFS analysis with a
walk through the rows and the write lifecycle's tally, and every template analysis with its rule sentence.
``Judge(write_walk=True, write_rule=True)`` writes those from the knowledge base and the model continues; with both
False the model writes them itself (as every release did until 2026-12-06). Both sides judge the same sessions
through the same ``Judge`` code and one started vLLM engine (its dtype and settings shared; asserted: the same prompts,
the same client, greedy but for the judge's own malformed-answer retry, no verdict cache), and report per set:
wall-clock seconds, new tokens the model wrote (what decoding costs on a CPU), F1 of the written answer (served normal
on void evidence, as the evaluation counts it) and at the default threshold of the set's level (session 0.0007,
template 0.5), faithfulness (``training.faithfulness.problems`` and the served checks, as the evaluation counts it)
and how many rationales the analysis budget cut.

Sets: the project's HDFS evaluation sets of a split (``training.evaluate.build_sets``: whole sessions, unseen
sequences, fragments; Loghub HDFS block labels, Xu et al., SOSP 2009) and its BGL and Spirit template sets (Loghub
templates with the RationAnomaly paper's corrected labels). Each side judges each set in chunks of 64 (as the
evaluation does); the sides alternate per set, the daemon's first on odd sets, so neither has the warmer engine
throughout.

Usage: ``.venv/bin/python bench/facts.py [--model DIR] [--config training/configs/cpu_continue.toml] [--split test]
[--sets TEXT] [--limit N] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import ROOT, default_model_dir, print_machine


class CountingClient:
    """The model client, counting the tokens it was asked for and wrote."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.new_tokens = 0
        self.requests = 0

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def generate(self, conversations, *, max_tokens, temperature, regex):
        assert temperature == 0.0 or temperature > 0.5  # greedy, or the judge's own malformed-answer retry
        out = await self.inner.generate(conversations, max_tokens=max_tokens, temperature=temperature, regex=regex)
        self.new_tokens += sum(c.completion_tokens for c in out)
        self.requests += len(conversations)
        return out

    async def check_health(self) -> bool:
        return await self.inner.check_health()


def f1(pairs: list[tuple[bool, bool]]) -> float:
    tp = sum(p and t for p, t in pairs)
    wrong = sum(p != t for p, t in pairs)
    return round(2 * tp / (2 * tp + wrong), 3) if tp or wrong else 1.0


async def judge_side(client: CountingClient, cfg, es, by_daemon: bool) -> dict:
    from rationad.answer import CUT_MARK
    from rationad.config import JudgeConfig
    from rationad.judge import Judge
    from rationad.prompt import user_message

    from training.faithfulness import problems

    judge = Judge(client, cfg, es.source, write_walk=by_daemon, write_rule=by_daemon)
    t0, tokens0, requests0 = time.monotonic(), client.new_tokens, client.requests
    judged = []
    for i in range(0, len(es.sessions), 64):
        judged.extend(await judge.judge_many(es.sessions[i:i + 64]))
    seconds = time.monotonic() - t0
    jc = JudgeConfig()
    written, served, faithful, cut, prompts = [], [], 0, 0, []
    for j, members in zip(judged, es.members, strict=True):
        prompts.append(user_message(j.view))
        at = j.verdict_at(jc.threshold_template if es.served_level == "template"
                          else jc.session_threshold(j.session.unfinished))
        for e in members:
            written.append((j.verdict_at(None) == "anomalous", e.label == "anomalous"))
            served.append((at == "anomalous", e.label == "anomalous"))
        rationale = j.answer.rationale or ""
        faithful += j.ok and not j.answer.problems and not problems(rationale, j.view)
        cut += rationale.endswith(CUT_MARK.strip())
    n = len(judged)
    return {"sessions": n, "seconds": round(seconds, 1), "new_tokens": client.new_tokens - tokens0,
            "requests": client.requests - requests0,
            "new_tokens_per_session": round((client.new_tokens - tokens0) / n, 1),
            "well_formed": round(sum(j.ok for j in judged) / n, 3), "f1_written": f1(written), "f1_served": f1(served),
            "faithful": round(faithful / n, 3), "cut": cut, "_prompts": prompts}


async def run(a) -> dict:
    from dataclasses import replace

    from rationad.model.base import make_client

    from training.config import load
    from training.evaluate import build_sets, eval_inputs, serving_config
    from training.pipeline import prepare_base

    cfg_file = load(a.config)
    p, dc, corpus = eval_inputs(cfg_file, a.config, prepare_base(cfg_file), False)
    # the sets judged one prompt per session or template (the unseen system's windows go by template through the
    # template book, which builds its own Judge: measured by the evaluation, not here)
    sets = [es for es in build_sets(corpus, p, a.split, val_mode=a.split == "val", datasets=dc.datasets)
            if (es.source == "hdfs" or "templates" in es.name) and es.level == "session" and a.sets in es.name]
    if a.limit:
        sets = [replace(es, sessions=es.sessions[:a.limit], members=es.members[:a.limit]) for es in sets]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    cfg = serving_config(a.model)
    client = CountingClient(make_client(cfg))
    await client.inner.start()
    report = {"model": str(a.model), "split": a.split, "dtype": cfg.dtype, "sets": {}}
    try:
        for n, es in enumerate(sets):
            sides = {}
            for by_daemon in ((True, False) if n % 2 else (False, True)):
                sides["daemon" if by_daemon else "model"] = await judge_side(client, cfg, es, by_daemon)
            assert sides["daemon"].pop("_prompts") == sides["model"].pop("_prompts")  # the same prompts both sides
            report["sets"][es.name] = sides
            print(f"{es.name}: facts written by the model {json.dumps(sides['model'])}", flush=True)
            print(f"{es.name}: facts written by the daemon {json.dumps(sides['daemon'])}", flush=True)
    finally:
        await client.inner.aclose()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="merged model folder (default: the setup's default)")
    ap.add_argument("--config", type=Path, default=ROOT / "training/configs/cpu_continue.toml")
    ap.add_argument("--split", default="test")
    ap.add_argument("--sets", default="", help="only the sets whose names contain this (e.g. 'templates')")
    ap.add_argument("--limit", type=int, default=0, help="sessions per set (0: all)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    a.model = (a.model or default_model_dir()).expanduser()
    machine = print_machine()
    report = asyncio.run(run(a))
    report["machine"] = machine
    print("| set | facts written by | sessions | seconds | new tokens / session | well-formed | F1 written | F1 served "
          "| faithful | cut |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, sides in report["sets"].items():
        for who in ("model", "daemon"):
            s = sides[who]
            print(f"| {name} | {who} | {s['sessions']} | {s['seconds']} | {s['new_tokens_per_session']} | "
                  f"{s['well_formed']} | {s['f1_written']} | {s['f1_served']} | {s['faithful']} | {s['cut']} |")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
