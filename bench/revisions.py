"""Revisions judged alone vs with their earlier lines, on HDFS blocks as a live stream delivers them.

The daemon closes a session ``sessions.max_open_secs`` (600) of wall clock after its first line and judges it; later
lines of the key form revision 2, 3, ... A stream read at its own pace has wall clock = event time, and real HDFS
blocks live for hours (of the demo sample's 400 blocks, 303 span more than 600 s), so most blocks reach the model in
pieces. This script windows a labelled raw HDFS log exactly so (``Sessionizer`` with the hdfs dialect's spec and
``max_open_secs``, the clock being each line's own timestamp, ``tick`` after every line) and judges the same pieces
twice through the daemon's model stage (``rationad.replay.judge_sessions``: in-process vLLM engine, daemon defaults,
verdict cache on, ``judge.threshold_session``):

- ``alone``: each revision shows only its own lines (``Session.context`` emptied: the daemon before this change);
- ``with context``: each revision shows its key's earlier lines first (the daemon now).

Same model, engine, prompts' format, threshold and pieces on both sides (asserted: the same keys, revisions and
lines). Reported per side: the pieces of normal blocks flagged, block-level P/R/F1 for "any revision flagged" and for
"the latest revision's verdict" (what a consumer that keeps the latest revision per key sees), model calls, seconds.

Thresholds: the figures above take ``judge.threshold_session`` for every piece. The daemon judges a piece closed by
``max_open`` (unfinished: its key may still receive lines) at ``judge.threshold_unfinished`` instead; from the same
run's scores (each piece's score and close reason are kept in the JSON), ``unfinished_rule`` gives the same figures
with that rule for several values of it, the configured default among them. Nothing is tuned on this sample: the
default is the model's own answer (0.5).

Usage: ``.venv/bin/python bench/revisions.py [--log rationad/data/hdfs_sample.log.gz]
[--labels rationad/data/hdfs_sample_labels.csv] [--max-open-secs 600] [--sides alone,with_context] [--model DIR]
[--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from _common import ROOT, default_model_dir, print_machine

from rationad import replay
from rationad.answer import thresholded_verdict
from rationad.config import InputConfig, JudgeConfig, SessionsConfig, load_settings
from rationad.dialects import make_parser
from rationad.records import Session
from rationad.windows import Sessionizer, resolve_spec


def pieces(log: Path, labels: dict[str, str], max_open_secs: float) -> list[Session]:
    """The sessions the daemon closes on ``log`` read at its own pace (wall clock = event time)."""
    parser = make_parser(InputConfig(dialect="hdfs"))
    spec = replace(resolve_spec(SessionsConfig(), "hdfs"), max_open_secs=max_open_secs)
    w = Sessionizer(spec, topic=str(log), partition=0)
    out: list[Session] = []
    clock = 0.0
    with replay.open_text(log) as f:
        for n, text in enumerate(f, start=1):
            for line in parser.parse(text.rstrip("\n").encode(), topic=str(log), offset=n):
                clock = line.ts if line.ts is not None else clock
                out += w.add(line, clock)
                out += w.tick(clock)
    out += w.flush("end_of_input")
    for s in out:
        s.label = labels.get(s.key)
        s.source_id = f"{s.key}#{s.revision}"
    return out


def block_scores(recs: list[dict], labels: dict[str, str], latest_only: bool) -> dict[str, float]:
    flagged: dict[str, bool] = {}
    for r in recs:  # in close order: a key's revisions come in order
        key = r["id"].split("#")[0]
        hit = r["verdict"] == "anomalous"
        flagged[key] = hit if latest_only else flagged.get(key, False) or hit
    tp = sum(f and labels[k] == "anomalous" for k, f in flagged.items())
    fp = sum(f and labels[k] == "normal" for k, f in flagged.items())
    fn = sum(not f and labels[k] == "anomalous" for k, f in flagged.items())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(p, 3), "recall": round(r, 3),
            "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0}


def decided(recs: list[dict], sessions: list[Session], judge: JudgeConfig, unfinished: float) -> list[dict]:
    """``recs`` with each verdict taken again from its score as the daemon takes it (``JudgeConfig.session_threshold``
    of ``Session.unfinished``), with ``threshold_unfinished`` = ``unfinished``."""
    judge = judge.model_copy(update={"threshold_unfinished": unfinished})
    return [{**r, "verdict": thresholded_verdict(r["model_verdict"], r["score"],
                                                 judge.session_threshold(s.unfinished))}
            for r, s in zip(recs, sessions, strict=True)]


def side_figures(recs: list[dict], sessions: list[Session], labels: dict[str, str]) -> dict:
    normal = [r for r, s in zip(recs, sessions, strict=True) if s.label == "normal"]
    later = [r for r, s in zip(recs, sessions, strict=True) if s.label == "normal" and s.revision > 1]
    return {
        "normal_pieces_flagged": [sum(r["verdict"] == "anomalous" for r in normal), len(normal)],
        "normal_later_revisions_flagged": [sum(r["verdict"] == "anomalous" for r in later), len(later)],
        "normal_blocks_flagged_at_some_revision": len({r["id"].split("#")[0] for r in normal
                                                       if r["verdict"] == "anomalous"}),
        "blocks_any_revision": block_scores(recs, labels, latest_only=False),
        "blocks_latest_revision": block_scores(recs, labels, latest_only=True),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", type=Path, default=ROOT / "rationad" / "data" / "hdfs_sample.log.gz")
    ap.add_argument("--labels", type=Path, default=ROOT / "rationad" / "data" / "hdfs_sample_labels.csv")
    ap.add_argument("--max-open-secs", type=float, default=600.0)
    ap.add_argument("--sides", default="alone,with_context")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    info = print_machine()
    labels = replay.read_labels(args.labels)
    settings = load_settings(ROOT / "config.toml", model={"path": str(args.model or default_model_dir())})
    threshold = settings.judge.threshold("session")
    with_context = pieces(args.log, labels, args.max_open_secs)
    alone = [replace(s, context=[]) for s in with_context]
    revised = [s for s in with_context if s.revision > 1]
    print(f"{len({s.key for s in with_context})} blocks -> {len(with_context)} sessions ({len(revised)} revisions "
          f"after a max_open close, {sum(len(s.context) for s in revised)} context lines); threshold {threshold:g}",
          flush=True)
    assert [(s.key, s.revision, s.lines) for s in alone] == [(s.key, s.revision, s.lines) for s in with_context]

    async def judge(sessions: list[Session]) -> tuple[list[dict], int, float]:
        from rationad.model.base import make_client

        client = make_client(settings.model)
        await client.start()
        try:
            buf, t = io.BytesIO(), time.monotonic()
            _, calls = await replay.judge_sessions(sessions, settings.model, "hdfs", buf, use_cache=True,
                                                   client=client, chunk=64, threshold=threshold)
            return [orjson.loads(x) for x in buf.getvalue().splitlines()], calls, time.monotonic() - t
        finally:
            await client.aclose()

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    result: dict = {"machine": info, "log": str(args.log), "max_open_secs": args.max_open_secs,
                    "threshold": threshold, "blocks": len({s.key for s in with_context}),
                    "sessions": len(with_context), "revisions": len(revised)}
    unfinished_default = settings.judge.threshold_unfinished
    for name, sessions in (("alone", alone), ("with_context", with_context)):
        if name not in args.sides.split(","):
            continue
        recs, calls, secs = asyncio.run(judge(sessions))
        result[name] = {**side_figures(decided(recs, sessions, settings.judge, threshold), sessions, labels),
                        "malformed": sum(r["model_verdict"] is None for r in recs),
                        "model_calls": calls, "seconds": round(secs, 1),
                        "pieces": [{"key": s.key, "revision": s.revision, "close_reason": s.close_reason,
                                    "label": s.label, "score": r["score"], "model_verdict": r["model_verdict"]}
                                   for r, s in zip(recs, sessions, strict=True)]}
        print(name, orjson.dumps({k: v for k, v in result[name].items() if k != "pieces"}).decode(), flush=True)
        rule = {}
        for unfinished in sorted({threshold, 0.01, 0.1, 0.5, unfinished_default}):
            rule[f"{unfinished:g}"] = side_figures(decided(recs, sessions, settings.judge, unfinished), sessions,
                                                   labels)
            print(f"  {name}, max_open pieces at {unfinished:g}"
                  f"{' (judge.threshold_unfinished)' if unfinished == unfinished_default else ''}:",
                  orjson.dumps(rule[f"{unfinished:g}"]).decode(), flush=True)
        result[name]["unfinished_rule"] = rule
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
