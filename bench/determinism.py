"""Run-to-run determinism of the model stage: the same prompts judged several times by one vLLM server.

Why it matters: a verdict an operator reads should not depend on which other sessions shared the batch or on what
vLLM's prefix cache held. With greedy decoding it still can: batch shapes and cached prefixes change the float
arithmetic, a near tie between two tokens of the rationale goes the other way, and the rest of the completion (and the
answer's probability) follows. The daemon's verdict cache makes a verdict a function of the prompt while the entry
lives; this script measures what the engine does without it (``Judge`` with ``cache=None``, greedy).

One vLLM OpenAI server on CPU (the tests' harness, bf16 where the CPU has avx512_bf16), ``--sessions`` labelled HDFS
sessions (half anomalous, rendered as the tests render them), judged ``--runs`` times in one batch each. Reports per
session the written answers and the scores P(anomalous) of every run, and how many sessions got more than one written
answer, or more than one verdict at the session threshold (``judge.threshold_session``).

Usage: ``.venv/bin/python bench/determinism.py [--sessions 8] [--runs 4] [--model DIR] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_model_dir, print_machine  # noqa: E402


async def _judge_runs(url: str, model: Path, sessions: list, runs: int) -> list[list]:
    from rationad.config import ModelConfig
    from rationad.replay import judging

    cfg = ModelConfig(backend="vllm-server", server_url=url, served_model_name="rationad", path=model)
    out = []
    async with judging(cfg, "hdfs") as judge:  # no verdict cache: every run asks the model
        for r in range(runs):
            t = time.monotonic()
            out.append(await judge.judge_many(sessions))
            print(f"run {r + 1}: {len(sessions)} sessions in {time.monotonic() - t:.1f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from rationad.config import JudgeConfig
    from tests.failure.support import sessions_of
    from tests.integration.harness import VllmServer, load_sessions, render

    m = print_machine()
    model = Path(args.model or default_model_dir())
    threshold = JudgeConfig().threshold("session")
    lines, labels = render(load_sessions(args.sessions, seed=5, anomalous_share=0.5), seed=5)
    sessions = sessions_of(lines)
    assert len(sessions) == args.sessions, (len(sessions), args.sessions)
    with tempfile.TemporaryDirectory() as tmp:
        server = VllmServer(model, log_path=Path(tmp) / "vllm.log").start()
        try:
            runs = asyncio.run(_judge_runs(server.url, model, sessions, args.runs))
        finally:
            server.stop()
    rows = []
    for i, s in enumerate(sessions):
        answers = [run[i].answer.verdict for run in runs]
        scores = [run[i].score for run in runs]
        verdicts = [run[i].verdict_at(threshold) for run in runs]
        rows.append({"key": s.key, "label": labels[s.key], "answers": answers, "scores": scores,
                     "verdicts_at_threshold": verdicts})
        shown = ", ".join(f"{a}/{'-' if p is None else f'{p:.5f}'}" for a, p in zip(answers, scores, strict=True))
        print(f"{s.key} ({labels[s.key]}): {shown}")
    answer_varies = sum(len(set(r["answers"])) > 1 for r in rows)
    verdict_varies = sum(len(set(r["verdicts_at_threshold"])) > 1 for r in rows)
    score_varies = sum(len({round(p, 6) for p in r["scores"] if p is not None}) > 1 for r in rows)
    print(f"sessions {len(rows)}, runs {args.runs}: written answer differs between runs for {answer_varies}, verdict "
          f"at threshold {threshold} for {verdict_varies}, score (6 decimals) for {score_varies}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": m, "model": str(model), "args": vars(args),
                                               "threshold": threshold, "sessions": rows,
                                               "answer_varies": answer_varies, "verdict_varies": verdict_varies,
                                               "score_varies": score_varies}, indent=1))


if __name__ == "__main__":
    main()
