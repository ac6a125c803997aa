"""Faithfulness of rationales (issue 16, item 5): the share whose checkable statements agree with the session.

``rationad.faithful`` checks what any session can confirm (counts, quoted words, failure claims, foreign phrases,
training-only sentences). For HDFS sessions this adds what the knowledge base (``rationad.hdfs_kb``) knows, the same
code that writes the training rationales (``training.rationales``):

- **roles**: a walk entry ``L2 x3 received`` must name the row's role as the knowledge base reads its template (an
  ``ERROR ...`` entry an error row, and a lifecycle or routine tag that row's tag);
- **tally**: ``Starts 3, received 2, acknowledged 2, registered 2; error lines 1.`` must be the session's counts (and
  ``Error lines 1.``, the short form models released before 2026-12-05 write without receive starts, its error rows);
- **pairs**: ``3 receive starts but 1 completions`` must be the session's starts and one of its completion counts.

Used by the evaluation (``faithful_rate`` per set), the GRPO grounding reward (a penalty per problem) and the release
gate (a candidate must not be less faithful than the released model).
"""

from __future__ import annotations

import re

from rationad.faithful import problems as session_problems
from rationad.prompt import SessionView
from rationad.facts import WALK_TAGS, error_rows, hdfs_roles, hdfs_walk, tally

_TAGS = "|".join(re.escape(t) for t in sorted(set(WALK_TAGS.values()) | {"unknown", "ignored text"}, key=len,
                                              reverse=True))
_WALK_ENTRY = re.compile(rf"\bL(\d{{1,4}}) x\d+ (ERROR\b|{_TAGS})")
_TALLY = re.compile(r"\bStarts (\d+), received (\d+), acknowledged (\d+), registered (\d+); error lines (\d+)")
_ERRORS = re.compile(r"\bError lines (\d+)")
_PAIR = re.compile(r"\b(\d+) receive starts but (\d+) completions")


def problems(rationale: str, view: SessionView) -> list[str]:
    """Every statement of ``rationale`` the session (and for HDFS the knowledge base) refutes."""
    out = session_problems(rationale, view)
    if view.source != "hdfs" or not rationale:
        return out
    walk = hdfs_walk(view)
    tag_of = {e.split(" ", 2)[0]: e.split(" ", 2)[2] for e in walk}
    for m in _WALK_ENTRY.finditer(rationale):
        ref, said = f"L{int(m.group(1))}", m.group(2)
        want = tag_of.get(ref)
        if want is None or want == "ignored text":
            continue
        if (said == "ERROR") != want.startswith("ERROR ") or (said != "ERROR" and said != want):
            out.append(f"role: says {ref} is {said!r}, the knowledge base reads it as {want!r}")
    roles = hdfs_roles(view)
    want_tally = tally(roles, walk)
    for m in _TALLY.finditer(rationale):
        if m.group(0) + "." != want_tally:
            out.append(f"tally: says {m.group(0)!r}, the session's is {want_tally!r}")
    errors = error_rows(walk)
    for m in _ERRORS.finditer(rationale):  # the short form of models trained before one tally form: its one number
        if int(m.group(1)) != errors:
            out.append(f"tally: says {m.group(0)!r}, the session has {errors} error lines")
    starts = roles.get("write_start", ("", 0))[1]
    ends = {roles.get(r, ("", 0))[1] for r in ("write_done", "responder_done", "stored")}
    for m in _PAIR.finditer(rationale):
        if int(m.group(1)) != starts or int(m.group(2)) not in ends:
            out.append(f"pair: says {m.group(0)!r}, the session has {starts} starts and completions {sorted(ends)}")
    return out


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
    from training.evaluate import build_sets, eval_inputs, evaluate_model, slug
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
            "parts": {name: {"judged": len(pts), "faithful": sum(not pt["problems"] for pt in pts),
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
