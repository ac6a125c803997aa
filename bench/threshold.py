"""Score and threshold on the validation split (issue 16, item 2; BENCHMARKS.md section 11).

Judges the validation split of the training corpus with the released model through the daemon's serving path
(``rationad.replay.judge_sessions``: in-process vLLM engine, constrained, greedy, daemon defaults): every HDFS
validation view once (ordered by ``training.splits.unit(view, "score16")``; the first ``--choose`` views are where a
threshold is chosen, the rest hold it out) and every BGL and Spirit validation template. One JSON line per item
(score, the model's written answer, the labels of the sessions behind it) goes to ``--data``; then the PR curves,
average precision, agreement of ``score >= 0.5`` with the written answer and the best-F1 thresholds are printed with
``rationad.replay``'s own ``pr_curve`` / ``operating_points_table`` (what ``rationad replay --labels`` prints).

Usage: ``.venv/bin/python bench/threshold.py [--model DIR] [--choose 200] [--data bench/results/threshold]``;
``--no-measure`` analyses what ``--data`` already holds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from _common import ROOT, default_model_dir, print_machine

from rationad import replay
from rationad.answer import ranked_score

CONFIG = ROOT / "training" / "configs" / "cpu.toml"


def measure(model: Path, data: Path, choose: int) -> None:
    from rationad.model.base import make_client
    from training.evaluate import eval_inputs, serving_config, template_set
    from training.splits import unit

    t0 = time.monotonic()
    _, _, corpus = eval_inputs(tomllib.loads(CONFIG.read_text()), CONFIG, model, False)
    print(f"corpus in {time.monotonic() - t0:.0f} s", flush=True)
    val = corpus.splits["val"]
    groups: dict[str, list] = {}
    for e in val:
        if e.task == "hdfs":
            groups.setdefault(e.view_key, []).append(e)
    keys = sorted(groups, key=lambda k: unit(k, "score16"))
    sets = [("hdfs", "hdfs", [groups[k][0].extra["session"] for k in keys], [groups[k] for k in keys])]
    for name in ("bgl", "spirit"):
        ts = template_set([e for e in val if e.task == name], name, name, 0)
        sets.append((name, name, ts.sessions, ts.members))

    async def run() -> None:
        mc = serving_config(model)
        client = make_client(mc)
        await client.start()
        try:
            for name, source, sessions, members in sets:
                buf = io.BytesIO()
                t = time.monotonic()
                _, calls = await replay.judge_sessions(sessions, mc, source, buf, use_cache=True, client=client,
                                                       chunk=64)
                recs = [orjson.loads(x) for x in buf.getvalue().splitlines()]
                data.mkdir(parents=True, exist_ok=True)
                with (data / f"{name}.jsonl").open("wb") as f:
                    for i, (r, m) in enumerate(zip(recs, members, strict=True)):
                        part = ("choose" if i < choose else "held_out") if name == "hdfs" else "all"
                        f.write(orjson.dumps({"id": r["id"], "part": part, "model_verdict": r["model_verdict"],
                                              "score": ranked_score(r["score"], bool(r.get("unsupported"))),
                                              "labels": [e.label for e in m]}) + b"\n")
                print(f"{name}: {len(sessions)} prompts, {calls} calls, {time.monotonic() - t:.0f} s", flush=True)
        finally:
            await client.aclose()

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    asyncio.run(run())


def report(title: str, recs: list[dict], weighted: bool) -> None:
    """PR curve of ``recs``; ``weighted``: each view counts once per session behind it (as RESULTS.md does)."""
    pairs, unscored, malformed, agree, total = [], 0, 0, 0, 0
    for r in recs:
        if r["model_verdict"] is None:
            malformed += len(r["labels"]) if weighted else 1
            continue
        if r["score"] is None:
            unscored += 1
            continue
        total += 1
        agree += (r["score"] >= 0.5) == (r["model_verdict"] == "anomalous")
        labels = r["labels"] if weighted else [max(r["labels"], key=r["labels"].count)]
        pairs += [(r["score"], lab == "anomalous") for lab in labels]
    if not pairs:
        return
    curve = replay.pr_curve(pairs)
    pos = sum(y for _, y in pairs)
    at = replay.at_threshold(curve, 0.5, pos, len(pairs) - pos)
    best, thr = replay.best_f1(curve)
    print(f"### {title}: {len(pairs)} items ({pos} anomalous), malformed {malformed}, unscored {unscored}, "
          f"score>=0.5 agrees with the written answer {agree}/{total}, distinct scores {len(curve)}, "
          f"AP {replay.average_precision(curve):.4f}")
    print(f"at 0.5: P {at.precision:.4f} R {at.recall:.4f} F1 {at.f1:.4f} flagged {at.flagged}; best F1 "
          f"{best.f1:.4f} at score >= {best.threshold:.6g} (configure {thr:.6g}): P {best.precision:.4f} "
          f"R {best.recall:.4f}")
    print(replay.operating_points_table(pairs, 0.5))
    print()


def analyse(data: Path) -> None:
    def load(name: str) -> list[dict]:
        p = data / f"{name}.jsonl"
        return [orjson.loads(x) for x in p.read_bytes().splitlines()] if p.exists() else []

    hdfs = load("hdfs")
    for part in ("choose", "held_out", None):
        recs = [r for r in hdfs if part is None or r.get("part") == part]
        what = {"choose": "first views (threshold chosen here)", "held_out": "held-out views", None: "all views"}[part]
        report(f"HDFS val, {what}, each view once", recs, False)
        report(f"HDFS val, {what}, weighted by sessions", recs, True)
    bgl, spirit = load("bgl"), load("spirit")
    report("BGL templates val", bgl, False)
    report("Spirit templates val", spirit, False)
    report("BGL + Spirit templates val (pooled)", bgl + spirit, False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the prepared default model)")
    ap.add_argument("--choose", type=int, default=200, help="HDFS views the threshold is chosen on; the rest hold out")
    ap.add_argument("--data", type=Path, default=ROOT / "bench" / "results" / "threshold",
                    help="folder of the per-item JSON lines")
    ap.add_argument("--no-measure", action="store_true", help="only analyse what --data holds")
    args = ap.parse_args()
    print_machine()
    if not args.no_measure:
        measure(args.model or default_model_dir(), args.data, args.choose)
    analyse(args.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
