"""Where an evaluation figure rests on data the model or a baseline was built from (review, 2026-12-07).

``python -m training.leakage`` prints five audits, each a count a reader of RESULTS.md should have beside the figure:

1. ``rules``: knowledge-base rule alternatives (``rationad/data/template_rules.json``) that match no training-split
   BGL/Spirit template but some validation or test one (words read off the expert corrections, which cover every
   split), and the KB baseline's F1 with and without them.
2. ``fragments``: fragments of the ``HDFS fragments`` set whose prompt is a training head or tail row.
3. ``gate``: validation HDFS views the release gate judges that are SFT rows, and the unseen validation views.
4. ``demo``: blocks of the bundled demo sample by split, and how many of their prompts are SFT rows.
5. ``bgl2k``: BGL_2k lines (and corrected-anomalous lines) whose template prompt is a training row.

Nothing here trains or judges; it reads ../shared/datasets and the config's data settings. With ``--rescore MODEL``
it also judges the BGL and Spirit template test sets with the merged model twice through the serving path, once with
the served rules and once with the rules cut to the words training-split templates evidence
(``training.held_out_rules``, as the evaluate and gate stages now judge), so the model's figure without test-derived
words stands beside the one published (two vLLM runs, minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter
from pathlib import Path

from training.config import load, section
from training.dataset import DataConfig, load_corpus, select_sft
from training.evaluate import EvalParams
from training.held_out_rules import held_out, template_texts, train_rules

ROOT = Path(__file__).resolve().parent.parent


def _f1(pairs: list[tuple[bool, bool]]) -> float:
    tp = sum(p and y for p, y in pairs)
    wrong = sum(p != y for p, y in pairs)
    return round(2 * tp / (2 * tp + wrong), 3) if tp else 0.0


def rules_audit(splits: dict) -> dict:
    """Rule alternatives that match val/test templates only, and the KB baseline's F1 with and without them."""
    from rationad.template_rules import match_rule

    texts = template_texts(splits)
    cut, dropped = train_rules(splits)
    kept = [(r["verdict"], re.compile(r["pattern"], re.I)) for r in cut["rules"]]

    def pruned(t: str) -> bool:
        return next((v for v, rx in kept if rx.search(t)), None) == "anomalous"

    f1 = {}
    for s in ("val", "test"):
        for system in ("bgl", "spirit"):
            items = [(e, t) for e, t in texts[s] if e.task == system]
            full = [((m := match_rule(t)[0]) is not None and m.verdict == "anomalous", e.label == "anomalous")
                    for e, t in items]
            f1[f"{system} {s}"] = {"all rules": _f1(full),
                                   "train-only words": _f1([(pruned(t), e.label == "anomalous") for e, t in items])}
    return {"alternatives matching val/test templates only": dropped, "KB F1": f1}


def fragments_audit(corpus, dc: DataConfig, max_views: int) -> dict:
    from rationad.prompt import view_of

    from training.data_fragments import head_examples, tail_examples
    from training.data_hdfs import SOURCE
    from training.evaluate import fragment_set
    from training.example import Example

    test = [e for e in corpus.splits["test"] if e.task == "hdfs"]
    fs = fragment_set(test, "test", max_views)
    train = corpus.splits["train"]
    heads = {e.view_key for e in head_examples(train, dc.hdfs_heads)} if dc.hdfs_heads else set()
    tails = {e.view_key for e in tail_examples(train, dc.hdfs_tails)} if dc.hdfs_tails else set()
    out = Counter()
    for s in fs.sessions:
        view = view_of(s, SOURCE, say_unfinished=s.close_reason == "max_open")
        k = Example("hdfs", SOURCE, "", view, "normal", "").view_key
        part = "head" if s.close_reason == "max_open" else "tail"
        out[f"{part}s"] += 1
        out[f"{part}s that are training rows"] += k in heads or k in tails
    return dict(out)


def gate_audit(corpus, dc: DataConfig, views: int) -> dict:
    from training.evaluate import hdfs_sets

    val = [e for e in corpus.splits["val"] if e.task == "hdfs"]
    top, unseen = hdfs_sets(val, "val", views, 10**9)
    rows = {e.view_key for e in select_sft(corpus.splits["train"], dc) if e.task == "hdfs"}
    return {"views judged": len(top.members), "of them SFT rows": sum(m[0].view_key in rows for m in top.members),
            "unseen validation views": len(unseen.members),
            "unseen validation sessions (anomalous)": (sum(len(m) for m in unseen.members),
                                                       sum(e.label == "anomalous" for m in unseen.members for e in m))}


def demo_audit(corpus, dc: DataConfig) -> dict:
    labels = {r["BlockId"]: r["Label"] for r in csv.DictReader(open(ROOT / "rationad/data/hdfs_sample_labels.csv"))}
    rows = {e.view_key for e in select_sft(corpus.splits["train"], dc) if e.task == "hdfs"}
    where = Counter()
    for s, ex in corpus.splits.items():
        for e in ex:
            if e.task == "hdfs" and "hdfs_2pct" in e.origin and e.sid in labels:
                where[(s, e.label, "SFT row" if e.view_key in rows else "not a row")] += 1
    return {"blocks": len(labels), "by split, label, prompt": {" / ".join(k): v for k, v in sorted(where.items())}}


def bgl2k_audit(splits: dict, datasets: Path) -> dict:
    from rationad import dialects
    from rationad.prompt import build_view, user_message
    from rationad.template_book import template_of, template_session

    from training.data_bgl import corrected_line_labels

    where = {user_message(e.view): s for s, ex in splits.items() for e in ex if e.task == "bgl"}
    lines = (datasets / "loghub/BGL_2k.log").read_text().splitlines()
    label = corrected_line_labels(datasets / "loghub/BGL_2k.log_structured.csv",
                                  datasets / "rationanomaly/anomaly_patch.json")
    templates = [template_of(dialects.bgl_fields(ln)[2]) for ln in lines]
    prompt = {t: user_message(build_view("bgl", [x.message for x in template_session(t).lines], templated=True))
              for t in set(templates)}
    out: Counter = Counter()
    for i, t in enumerate(templates):
        s = where.get(prompt[t], "none")
        out[f"lines whose template is a {s} row" if s != "none" else "lines whose template is no row"] += 1
        if label[str(i + 1)] == "anomalous":
            out[f"anomalous lines, template a {s} row" if s != "none" else "anomalous lines, template no row"] += 1
    return dict(sorted(out.items()))


TEMPLATE_SETS = ("BGL templates (test)", "SPIRIT templates (test)")


def rescore(cfg_path: Path, model: Path, out: Path) -> dict:
    """The template test sets judged by ``model`` with the served rules and with ``train_rules``: precision, recall,
    F1 (written answer and served at the template threshold), faithful and flagged shares of each side."""
    import asyncio

    from training.evaluate import build_sets, eval_inputs, evaluate_model
    from training.pipeline import prepare_base

    cfg = load(cfg_path)
    p, dc, corpus = eval_inputs(cfg, cfg_path, prepare_base(cfg), False)
    sets = [es for es in build_sets(corpus, p, "test", val_mode=False, datasets=dc.datasets)
            if es.name in TEMPLATE_SETS]
    runs = {"served rules": asyncio.run(evaluate_model(model, sets, out / "served_rules", p.chunk))}
    with held_out(corpus.splits, out) as dropped:  # as the evaluate stage judges
        runs["training-evidence rules"] = asyncio.run(evaluate_model(model, sets, out / "train_rules", p.chunk))
    keys = ("precision", "recall", "f1", "faithful_rate", "flag_rate")
    return {"model": str(model), "alternatives dropped": dropped,
            "sets": {side: {name: {**{k: r["sets"][name][k] for k in keys},
                                   "served": {k: (r["sets"][name]["served"] or {}).get(k) for k in keys[:3]}}
                            for name in TEMPLATE_SETS}
                     for side, r in runs.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="training/configs/cpu_continue.toml")
    ap.add_argument("--rescore", type=Path, metavar="MODEL",
                    help="a merged model folder: also judge the template test sets with the served and the "
                         "training-evidence rules")
    ap.add_argument("--out", type=Path, default=Path("build/leakage"), help="the rescore's verdicts and rules file")
    a = ap.parse_args(argv)
    from dataclasses import replace

    cfg = load(Path(a.config))
    dc = section(cfg, "data", DataConfig, a.config)
    p = section(cfg, "eval", EvalParams, a.config)
    # prompts sized by the approximate counter, not the base model's tokenizer: the views compared are short
    corpus = load_corpus(replace(dc, extra={**dc.extra, "keep_sessions": True}))
    report = {
        "rules": rules_audit(corpus.splits),
        "fragments": fragments_audit(corpus, dc, p.max_fragment_views),
        "gate": gate_audit(corpus, dc, p.val_hdfs_views),
        "demo": demo_audit(corpus, dc),
        "bgl2k": bgl2k_audit(corpus.splits, dc.datasets),
    }
    if a.rescore:
        report["rescore"] = rescore(Path(a.config), a.rescore.expanduser(), a.out)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
