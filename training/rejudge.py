"""Judge again, under the current serving settings, only the test answers an evaluation could not parse.

    python -m training.rejudge --config training/configs/cpu.toml --model sft [--max-new-tokens 384]

Greedy decoding gives an answer that closed within the old token budget unchanged under a larger one, so after
``[model] max_new_tokens`` is raised only the answers the old budget cut off (format errors) can change. This judges
those again through the same serving path and rewrites the set's verdicts (``eval/<model>/<set>.jsonl``), metrics
(``eval/metrics.json``, each rejudged set marked with what was judged again) and table, instead of a whole
evaluation (about 45 minutes a model on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from training.evaluate import set_metrics, verdicts_file


def rescore(points: list[dict[str, Any]], previous: dict[str, Any]) -> dict[str, Any]:
    """A set's metrics from its verdict records, as ``judge_set`` computes them; ``previous`` supplies what the
    records do not hold (timing, calls, note)."""
    s = set_metrics(points)
    s.update({k: previous[k] for k in ("judged_prompts", "model_calls", "seconds", "note") if k in previous})
    return s


def main(argv: list[str] | None = None) -> None:
    from rationad.config import ModelConfig

    from training.config import load
    from training.evaluate import EvalSet, build_sets, eval_inputs, evaluate_model, pr_plot, results_table
    from training.held_out_rules import held_out
    from training.merge_adapter import merged_folder
    from training.pipeline import prepare_base

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--model", choices=("sft", "grpo"), required=True)
    ap.add_argument("--out", type=Path, help="override the config's work folder")
    ap.add_argument("--max-new-tokens", type=int, help="answer budget (default: the daemon's [model] default)")
    a = ap.parse_args(argv)
    cfg = load(a.config)
    out = a.out or Path(cfg.get("out", "build/training"))
    metrics_file = out / "eval" / "metrics.json"
    if not metrics_file.is_file():
        raise SystemExit(f"{metrics_file} missing: run the evaluate stage first")
    metrics = json.loads(metrics_file.read_text())
    if a.model not in metrics["test"]:
        raise SystemExit(f"{metrics_file}: no test results for {a.model}")
    base = prepare_base(cfg)
    p, dc, corpus = eval_inputs(cfg, a.config, base, smoke=False)
    budget = a.max_new_tokens or ModelConfig().max_new_tokens
    todo: list[tuple[EvalSet, list[int], list[dict[str, Any]], Path]] = []
    for es in build_sets(corpus, p, p.split, val_mode=False, datasets=dc.datasets):
        f = verdicts_file(out / "eval" / a.model, es.name)
        points = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if [pt["id"] for pt in points] != [s.source_id or s.key for s in es.sessions]:
            raise SystemExit(f"{f}: its sessions are not the set {es.name!r} built now (data or config changed)")
        bad = [i for i, pt in enumerate(points) if pt["verdict"] is None]
        print(f"[rejudge] {es.name}: {len(bad)} of {len(points)} answers unparsed", flush=True)
        if bad:
            # the set's own judging level and served threshold, its unparsed sessions only
            todo.append((dataclasses.replace(es, sessions=[es.sessions[i] for i in bad],
                                             members=[es.members[i] for i in bad]), bad, points, f))
    if not todo:
        return
    merged = merged_folder(base, out / a.model / "adapter", cache=out / "merged")
    with tempfile.TemporaryDirectory() as tmp:
        # as the evaluate stage judged them (``training.held_out_rules``); an evaluation from before it, with the
        # served rules (no ``rules_dropped`` in its metrics)
        rules = held_out(corpus.splits, Path(tmp)) if "rules_dropped" in metrics else contextlib.nullcontext()
        with rules:
            res = asyncio.run(evaluate_model(merged, [t[0] for t in todo], Path(tmp), p.chunk, budget))
        for sub, bad, points, f in todo:
            again = [json.loads(x) for x in (Path(tmp) / f.name).read_text().splitlines() if x.strip()]
            for i, pt in zip(bad, again, strict=True):
                points[i] = pt
            f.write_text("".join(json.dumps(pt) + "\n" for pt in points))
            entry = metrics["test"][a.model]["sets"]
            s = rescore(points, entry[sub.name])
            s["rejudged"] = {"answers": len(bad), "max_new_tokens": budget,
                             "now_valid": sum(pt["verdict"] is not None for pt in again),
                             "model_calls": res["sets"][sub.name]["model_calls"]}
            entry[sub.name] = s
            print(f"[rejudge] {sub.name}: {json.dumps(s)}", flush=True)
    metrics_file.write_text(json.dumps(metrics, indent=1))
    table = {k: metrics["test"][k] for k in [*(m for m in ("sft", "grpo") if m in metrics["test"]), "kb"]}
    (out / "eval" / "results_table.md").write_text(results_table(table) + "\n")
    pr_plot(table, out / "eval" / "pr_curve.png")
    print(results_table(table), flush=True)


if __name__ == "__main__":
    main()
