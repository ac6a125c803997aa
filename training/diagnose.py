"""Where an HDFS candidate's analyses go wrong: each judged view's analysis against the one the knowledge base writes.

    python -m training.diagnose build/training/cpu/eval/gate/candidate/hdfs_sessions_val.jsonl

The analysis of an HDFS session walks the rows, tallies the write lifecycle and the error rows, then concludes
(``training.rationales.hdfs_rationale``). This reports, over sessions (a view counts for every session it stands
for): how often the walk is exact, how often walk and tally are, and how often the verdict is right in each case,
which separates copying errors (a wrong walk or tally) from reasoning errors (a wrong verdict after an exact tally).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.rationales import build


def walk_and_tally(think: str) -> tuple[str, str]:
    """(walk sentence, tally up to and including its error count) of an analysis; empty parts when absent."""
    walk, _, rest = think.partition(". ")
    first = rest.split(". ", 1)[0]
    tally = first + "." if "error lines" in first or first.startswith("Error lines") else ""
    return walk, tally


def summarize(judged: list[dict], references: dict[str, str]) -> dict[str, float | int]:
    """``judged``: the evaluation's verdict records (``id``, ``verdict``, ``rationale``, ``labels``);
    ``references``: the knowledge base's analysis per ``id``."""
    n = right = walk_ok = tally_ok = right_walk = right_tally = 0
    for rec in judged:
        k = len(rec["labels"])
        ok = sum(1 for lab in rec["labels"] if lab == rec["verdict"])
        got, ref = walk_and_tally(rec.get("rationale") or ""), walk_and_tally(references[rec["id"]])
        n, right = n + k, right + ok
        if got[0] == ref[0]:
            walk_ok, right_walk = walk_ok + k, right_walk + ok
            if got[1] == ref[1]:
                tally_ok, right_tally = tally_ok + k, right_tally + ok
    return {"sessions": n, "accuracy": right / n if n else 0.0,
            "walk_exact": walk_ok / n if n else 0.0, "accuracy_walk_exact": right_walk / walk_ok if walk_ok else 0.0,
            "walk_tally_exact": tally_ok / n if n else 0.0,
            "accuracy_walk_tally_exact": right_tally / tally_ok if tally_ok else 0.0}


def main(argv: list[str] | None = None) -> None:
    from training.dataset import DataConfig, load_corpus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("verdicts", type=Path, help="hdfs_sessions_<split>.jsonl of eval/<model>/ or eval/gate/<role>/")
    ap.add_argument("--datasets", type=Path, default=DataConfig().datasets)
    a = ap.parse_args(argv)
    judged = [json.loads(line) for line in a.verdicts.read_text().splitlines() if line.strip()]
    ids = {r["id"] for r in judged}
    corpus = load_corpus(DataConfig(datasets=a.datasets))
    refs = {ex.sid: build(ex).think for exs in corpus.splits.values() for ex in exs if ex.sid in ids}
    missing = ids - set(refs)
    if missing:
        raise SystemExit(f"{a.verdicts}: {len(missing)} ids not in the corpus (e.g. {sorted(missing)[0]})")
    s = summarize(judged, refs)
    print(json.dumps(s, indent=1))
    print(f"[diagnose] {s['sessions']} sessions: walk exact {s['walk_exact']:.3f}, walk and tally exact "
          f"{s['walk_tally_exact']:.3f}; verdict right {s['accuracy']:.3f} overall, {s['accuracy_walk_tally_exact']:.3f} "
          "where walk and tally are exact", flush=True)


if __name__ == "__main__":
    main()
