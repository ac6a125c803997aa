"""Faithfulness of rationales (issue 16, item 5): the share whose checkable statements agree with the session.

The checks are the daemon's (``rationad.faithful.problems``: what any session can confirm, and for HDFS sessions what
the knowledge base knows: walk roles, the tally, receive-start pairs), so that what the evaluation counts as refuted is
what the judge writes again before it serves a rationale.

Used by the evaluation (``faithful_rate`` per set), the GRPO grounding reward (a penalty per problem) and the release
gate (a candidate must not be less faithful than the released model).
"""

from __future__ import annotations

from rationad.faithful import problems
from rationad.prompt import SessionView

__all__ = ["faithful", "problems"]


def faithful(rationale: str, view: SessionView) -> bool:
    return not problems(rationale, view)


def main(argv: list[str] | None = None) -> None:
    """Measure a merged model's faithfulness on a config's evaluation sets (the evaluation's own path, a few items
    per set): ``python -m training.faithfulness --config training/configs/cpu.toml --model DIR --limit 60``."""
    import argparse
    import asyncio
    import json
    from collections import Counter, defaultdict
    from dataclasses import replace
    from pathlib import Path

    from rationad.answer import CUT_MARK

    from training.config import load
    from training.evaluate import build_sets, eval_inputs, evaluate_model, set_metrics, slug
    from training.pipeline import prepare_base

    ap = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True,
                    help="a merged model folder (e.g. ~/.cache/rationad/models/default)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--set", default="", help="only the sets whose names start with this (e.g. 'HDFS fragments')")
    ap.add_argument("--limit", type=int, default=60, help="items per set (the first of each set's order)")
    ap.add_argument("--out", type=Path, default=Path("build/faithfulness"))
    ap.add_argument("--json", type=Path, help="write the figures here")
    a = ap.parse_args(argv)
    cfg = load(a.config)
    p, dc, corpus = eval_inputs(cfg, a.config, prepare_base(cfg), False)
    sets = [replace(es, sessions=es.sessions[:a.limit], members=es.members[:a.limit])
            for es in build_sets(corpus, p, a.split, val_mode=a.split == "val", datasets=dc.datasets)
            if es.name.startswith(a.set)]
    if not sets:
        raise SystemExit(f"no {a.split} set starts with {a.set!r}")
    res = asyncio.run(evaluate_model(a.model.expanduser(), sets, a.out, p.chunk))
    report: dict = {"model": str(a.model), "split": a.split, "limit": a.limit, "sets": {}}
    for es in sets:
        s = res["sets"][es.name]
        points = [json.loads(line) for line in (a.out / f"{slug(es.name)}.jsonl").read_text().splitlines()]
        kinds = Counter(x.split(":")[0] for pt in points for x in pt.get("problems", []))
        # Items cut from one session (``id#part``, e.g. the fragments' heads and tails): each part on its own too.
        parts: dict[str, list[dict]] = defaultdict(list)
        for pt in points:
            if "#" in pt["id"]:
                parts[pt["id"].rsplit("#", 1)[1]].append(pt)
        report["sets"][es.name] = {
            "faithful_rate": s["faithful_rate"], "f1": s["f1"], "flag_rate": s["flag_rate"],
            "cut_rate": s["judged_cut_rate"], "judged": s["judged_prompts"],
            "problems_by_kind": dict(kinds.most_common()),
            # per part its own P / R / F1 too: the fragments' heads are training rows, their tails are not
            # (``training.leakage``), so the two are read apart
            "parts": {name: {"judged": len(pts), "faithful": sum(not pt["problems"] for pt in pts),
                             **{k: set_metrics(pts)[k] for k in ("precision", "recall", "f1")},
                             "cut": sum(pt["rationale"].endswith(CUT_MARK.strip()) for pt in pts),
                             "flagged": sum(pt["verdict"] == "anomalous" for pt in pts),
                             "problems_by_kind": dict(Counter(x.split(":")[0] for pt in pts
                                                              for x in pt["problems"]).most_common())}
                      for name, pts in parts.items()}}
        print(f"{es.name}: {json.dumps(report['sets'][es.name])}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
