"""Would fusing the model's score with the TF-IDF baseline's beat both on templates? (issue 16; measured, not adopted)

Judges every BGL and Spirit template of the validation and test splits through the serving path (the merged model's
verdicts and scores, as ``training.evaluate`` writes them; skipped where ``--out`` holds them already), fits the
TF-IDF + logistic-regression baseline on the training split (``training.baselines.fit_tfidf_lr``), and prints, per
system, test F1 of the model, the baseline, the knowledge-base rules and each fusion rule of the two probabilities, at
the threshold that gives the best F1 on validation, beside the best any threshold reaches on test (a ceiling, not a
result). It also counts the test templates a near-copy of a training template (TF-IDF cosine >= 0.9) labels the same,
or the other way, and the novel ones, with the model's errors on each::

    .venv/bin/python -m training.fusion --config training/configs/cpu.toml --model ~/.cache/rationad/models/default \\
        --out build/fusion
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any


NEAR_COPY = 0.9  # TF-IDF cosine at which a test template is taken for a copy of a training one
SYSTEMS = ("bgl", "spirit")
SPLITS = ("val", "test")


def f1_at(labels: list[bool], flagged: list[bool]) -> tuple[float, int, int, int]:
    """(F1, true positives, false positives, false negatives)."""
    tp = sum(y and f for y, f in zip(labels, flagged, strict=True))
    fp = sum(f and not y for y, f in zip(labels, flagged, strict=True))
    fn = sum(y and not f for y, f in zip(labels, flagged, strict=True))
    return (2 * tp / (2 * tp + fp + fn) if tp else 0.0), tp, fp, fn


def best_threshold(labels: list[bool], scores: list[float]) -> float:
    """The threshold (one of ``scores``; ``score >= threshold`` flags) with the best F1; the highest on a tie, the one
    flagging least. Not ``rationad.replay.best_f1``: a fused score of 0 is a threshold here (``min``, geometric mean),
    and with no anomalous item the highest score is still an answer."""
    best = (-1.0, 0.0)
    for t in sorted(set(scores), reverse=True):
        f = f1_at(labels, [s >= t for s in scores])[0]
        if f > best[0]:
            best = (f, t)
    return best[1]


RULES: dict[str, Callable[[float, float], float]] = {
    "model": lambda m, t: m,
    "TF-IDF": lambda m, t: t,
    "mean": lambda m, t: (m + t) / 2,
    "geometric mean": lambda m, t: (m * t) ** 0.5,
    "max": max,
    "min": min,
}


def fusion_rows(data: dict[str, dict[str, list]]) -> list[str]:
    """Markdown rows for one system: each rule at the validation-chosen threshold, its paired F1 difference from the
    model as served (95% bootstrap interval), and test's own best threshold (a ceiling). ``data[split]``: ``y``
    (anomalous?), ``m`` (model score), ``t`` (TF-IDF probability), ``served`` (the model's served verdict)."""
    from training.compare import paired_difference

    v, te = data["val"], data["test"]
    rows = []
    for name, rule in RULES.items():
        vs = [rule(m, t) for m, t in zip(v["m"], v["t"], strict=True)]
        ts = [rule(m, t) for m, t in zip(te["m"], te["t"], strict=True)]
        th = best_threshold(v["y"], vs)
        f, tp, fp, fn = f1_at(te["y"], [s >= th for s in ts])
        ceiling = f1_at(te["y"], [s >= best_threshold(te["y"], ts) for s in ts])[0]
        pair = paired_difference({str(i): (y, sv) for i, (y, sv) in enumerate(zip(te["y"], te["served"], strict=True))},
                                 {str(i): (y, s >= th) for i, (y, s) in enumerate(zip(te["y"], ts, strict=True))})
        rows.append(f"| {name} | {th:.4f} | {f1_at(v['y'], [s >= th for s in vs])[0]:.3f} | {f:.3f} | "
                    f"{tp} / {fp} / {fn} | {pair['diff']:+.3f} [{pair['ci95'][0]:+.3f}, {pair['ci95'][1]:+.3f}] | "
                    f"{ceiling:.3f} |")
    return rows


def _judge(model: Path, corpus, out: Path) -> None:
    from training.evaluate import evaluate_model, template_set, verdicts_file

    sets = [template_set([e for e in corpus.splits[split] if e.task == name], f"{name.upper()} templates ({split})",
                         name, 0) for split in SPLITS for name in SYSTEMS]
    todo = [s for s in sets if not verdicts_file(out, s.name).is_file()]
    if todo:
        asyncio.run(evaluate_model(model, todo, out, chunk=64))


def main(argv: list[str] | None = None) -> None:
    from rationad.templates import from_loghub
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    from training.baselines import fit_tfidf_lr
    from training.evaluate import eval_inputs, kb_verdict, template_session, verdicts_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True, help="a merged model folder (the released one: "
                    "~/.cache/rationad/models/default)")
    ap.add_argument("--out", type=Path, required=True, help="where the verdicts are written, or read if there")
    a = ap.parse_args(argv)
    model = a.model.expanduser().resolve()
    _, _, corpus = eval_inputs(tomllib.loads(a.config.read_text()), a.config, model, False)
    _judge(model, corpus, a.out)
    for name in SYSTEMS:
        train = [e for e in corpus.splits["train"] if e.task == name]
        clf = fit_tfidf_lr(train)
        data: dict[str, dict[str, Any]] = {}
        for split in SPLITS:
            ex = [e for e in corpus.splits[split] if e.task == name]
            recs = {r["id"]: r for r in map(json.loads, verdicts_file(
                a.out, f"{name.upper()} templates ({split})").read_text().splitlines())}
            texts = [from_loghub(e.extra["template"]) for e in ex]
            data[split] = {"y": [e.label == "anomalous" for e in ex],
                           "m": [recs[e.sid]["score"] if recs[e.sid]["score"] is not None
                                 else float(recs[e.sid]["verdict"] == "anomalous") for e in ex],
                           "served": [recs[e.sid]["verdict"] == "anomalous" for e in ex],
                           "t": [float(p) for p in clf.predict_proba(texts)[:, 1]],
                           "kb": [kb_verdict(template_session(e), name) == "anomalous" for e in ex],
                           "ex": ex, "texts": texts}
        v, te = data["val"], data["test"]
        print(f"\n{name.upper()}: validation {len(v['y'])} templates ({sum(v['y'])} anomalous), test {len(te['y'])} "
              f"({sum(te['y'])} anomalous)")
        for label, flagged in (("model as served", te["served"]), ("KB rules", te["kb"]),
                               ("TF-IDF at 0.5", [t >= 0.5 for t in te["t"]])):
            f, tp, fp, fn = f1_at(te["y"], flagged)
            print(f"  {label}: test F1 {f:.3f} (TP / FP / FN {tp} / {fp} / {fn})")
        print("| rule | threshold (validation's best) | validation F1 | test F1 | test TP / FP / FN | "
              "F1 - model as served [95%] | test's own best (ceiling) |\n|---|---|---|---|---|---|---|")
        print("\n".join(fusion_rows(data)))
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit([from_loghub(e.extra["template"])
                                                                          for e in train])
        sims = cosine_similarity(vec.transform(te["texts"]), vec.transform([from_loghub(e.extra["template"])
                                                                            for e in train]))
        kinds: dict[str, list[int]] = {"copy, same label": [0, 0, 0], "copy, other label": [0, 0, 0],
                                       "novel": [0, 0, 0]}
        for i, e in enumerate(te["ex"]):
            j = int(sims[i].argmax())
            k = "novel" if sims[i, j] < NEAR_COPY else (
                "copy, same label" if train[j].label == e.label else "copy, other label")
            kinds[k][0] += 1
            kinds[k][1] += te["y"][i]
            kinds[k][2] += te["served"][i] != te["y"][i]
        print("  test templates by their nearest training template: " + "; ".join(
            f"{k}: {n} ({a} anomalous, model wrong on {w})" for k, (n, a, w) in kinds.items()))


if __name__ == "__main__":
    main()
