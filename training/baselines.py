"""Simple baselines scored on the same evaluation sets as the model: what the model has to beat (issue 16).

- **keyword rule**: a session is anomalous when any of its lines contains one of ``KEYWORDS``. The list was written
  down before scoring anything (the words an operator greps for first) and is not tuned on any split.
- **template-count LR** (session sets): a logistic regression on the vector of daemon template counts of a session
  (what the prompt's ``Lk xN`` rows show), trained on the training split's sessions of the same source (HDFS block
  sessions; the other-system windows for the ``generic`` source). BGL has no sessions in the training split (only
  templates), so it has no count baseline.
- **TF-IDF + LR** (template sets): word uni- and bigram TF-IDF of the template text and a class-balanced logistic
  regression, trained on the training split's templates of the same system (BGL or Spirit). On windows of raw lines
  (BGL_2k; the unseen system with a classifier trained on both systems' templates) a window is anomalous when any
  of its templates is, the knowledge-base rules' any-row rule.
- **labelled neighbours** (template sets, ``knn``): the label of the ``KNN_K`` most similar training templates (the
  same TF-IDF, cosine, votes weighted by similarity): retrieval alone, the evidence issue 16's item 3 would put in the
  prompt, without the model. Windows as for TF-IDF + LR.

Everything is fitted on ``corpus.splits["train"]`` only, with fixed hyperparameters (chosen before scoring, never
tuned on validation or test) and ``random_state=0``; no model is needed. Figures and the command that made them:
training/RESULTS.md, section "Baselines".

    python -m training.baselines --config training/configs/cpu.toml \
        --release models/rationad-smollm2-135m-lora/manifest.json

scikit-learn is a training dependency only: the daemon (``rationad/``) never imports this module.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rationad.prompt import SessionView
from rationad.records import Session
from rationad.replay import Scores
from rationad.templates import from_loghub, to_template

from training.example import Example

if TYPE_CHECKING:
    from training.dataset import Corpus
    from training.evaluate import EvalSet

# Matched case-insensitively at the start of a word, so "fail" also matches "failed" and "failure".
KEYWORDS = ("error", "fail", "fatal", "exception", "critical", "panic", "abort", "corrupt", "denied", "refused",
            "unable", "cannot", "timeout", "timed out", "killed", "segfault")
KEYWORD_RE = re.compile(r"\b(?:" + "|".join(re.escape(k) for k in KEYWORDS) + ")", re.IGNORECASE)

NAMES = {"kb": "KB rules", "keyword": "keyword rule", "count_lr": "template-count LR", "tfidf_lr": "TF-IDF + LR",
         "knn": "labelled neighbours"}
KNN_K = 3
TEMPLATE_SYSTEMS = ("bgl", "spirit")
COUNT_SOURCES = {"hdfs": "hdfs", "generic": "generic"}  # evaluation source -> training task of its sessions
RANDOM_STATE = 0


def keyword_verdict(texts: Iterable[str]) -> str:
    """``anomalous`` when any text contains a word of ``KEYWORDS``."""
    return "anomalous" if any(KEYWORD_RE.search(t) for t in texts) else "normal"


def session_counts(session: Session) -> Counter[str]:
    """The daemon's template of every line, counted (template sessions hold templates already)."""
    templated = bool(session.extra.get("templated"))
    return Counter(ln.message if templated else to_template(ln.message) for ln in session.lines)


def view_counts(view: SessionView) -> dict[str, int]:
    """A training example's template counts, as its prompt rows show them."""
    return {r.template: r.count for r in view.rows}


def fit_count_lr(examples: list[Example]):
    """Logistic regression on template-count vectors of sessions."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(DictVectorizer(), LogisticRegression(C=1.0, max_iter=5000, random_state=RANDOM_STATE))
    return pipe.fit([view_counts(e.view) for e in examples], [e.label == "anomalous" for e in examples])


def fit_tfidf_lr(examples: list[Example]):
    """TF-IDF (word uni- and bigrams) + class-balanced logistic regression on template texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                         LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000,
                                            random_state=RANDOM_STATE))
    return pipe.fit([from_loghub(e.extra["template"]) for e in examples], [e.label == "anomalous" for e in examples])


def fit_knn(examples: list[Example]):
    """The ``KNN_K`` nearest training templates by TF-IDF cosine similarity, voting with their similarity."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                         KNeighborsClassifier(n_neighbors=KNN_K, metric="cosine", weights="distance"))
    return pipe.fit([from_loghub(e.extra["template"]) for e in examples], [e.label == "anomalous" for e in examples])


@dataclass(slots=True)
class Fitted:
    """The fitted learned baselines: count models by evaluation source, TF-IDF and neighbour models by system."""

    count_lr: dict[str, Any] = field(default_factory=dict)
    tfidf_lr: dict[str, Any] = field(default_factory=dict)
    knn: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, str] = field(default_factory=dict)  # model -> what it was trained on, for notes


def fit(corpus: Corpus) -> Fitted:
    """Fit every learned baseline on the corpus's training split, and nothing else."""
    train = corpus.splits["train"]
    out = Fitted()
    for source, task in COUNT_SOURCES.items():
        ex = [e for e in train if e.task == task]
        if len({e.label for e in ex}) == 2:
            out.count_lr[source] = fit_count_lr(ex)
            out.trained_on[f"count_lr:{source}"] = _trained(ex, f"{task} sessions")
    for system in TEMPLATE_SYSTEMS:
        ex = [e for e in train if e.task == system]
        if len({e.label for e in ex}) == 2:
            out.tfidf_lr[system], out.knn[system] = fit_tfidf_lr(ex), fit_knn(ex)
            out.trained_on[f"tfidf_lr:{system}"] = _trained(ex, f"{system.upper()} templates")
            out.trained_on[f"knn:{system}"] = _nearest(ex, f"{system.upper()} templates")
    ex = [e for e in train if e.task in TEMPLATE_SYSTEMS]
    if len({e.label for e in ex}) == 2:  # for a system seen in no training data
        out.tfidf_lr["generic"], out.knn["generic"] = fit_tfidf_lr(ex), fit_knn(ex)
        out.trained_on["tfidf_lr:generic"] = _trained(ex, "BGL+Spirit templates")
        out.trained_on["knn:generic"] = _nearest(ex, "BGL+Spirit templates")
    return out


def _trained(ex: list[Example], what: str) -> str:
    return f"trained on {len(ex)} train-split {what} ({sum(e.label == 'anomalous' for e in ex)} anomalous)"


def _nearest(ex: list[Example], what: str) -> str:
    return f"the {KNN_K} nearest of {len(ex)} train-split {what} ({sum(e.label == 'anomalous' for e in ex)} anomalous)"


def _any_row(model, sessions: list[Session]) -> list[str]:
    """A window is anomalous when the classifier calls any of its distinct templates anomalous."""
    rows = [list(session_counts(s)) for s in sessions]
    flat = [t for r in rows for t in r]
    pred = list(model.predict(flat)) if flat else []
    out, at = [], 0
    for r in rows:
        out.append("anomalous" if any(pred[at : at + len(r)]) else "normal")
        at += len(r)
    return out


def verdicts(fitted: Fitted, baseline: str, es: EvalSet) -> tuple[list[str], str] | None:
    """(one verdict per judged session of ``es``, a note) for a baseline, or None where it does not apply."""
    templated = es.source in TEMPLATE_SYSTEMS and all(s.extra.get("templated") for s in es.sessions)
    if baseline == "keyword":
        return [keyword_verdict(ln.message for ln in s.lines) for s in es.sessions], \
            f"any line matching one of {len(KEYWORDS)} keywords"
    if baseline == "count_lr":
        model = fitted.count_lr.get(es.source)
        if model is None:
            return None
        return (["anomalous" if p else "normal" for p in model.predict([dict(session_counts(s)) for s in es.sessions])],
                fitted.trained_on[f"count_lr:{es.source}"])
    if baseline in ("tfidf_lr", "knn"):
        model = getattr(fitted, baseline).get(es.source)
        if model is None or es.source == "hdfs":
            return None
        if templated:
            texts = [s.lines[0].message for s in es.sessions]
            return ["anomalous" if p else "normal" for p in model.predict(texts)], \
                fitted.trained_on[f"{baseline}:{es.source}"]
        return _any_row(model, es.sessions), fitted.trained_on[f"{baseline}:{es.source}"] + "; any row"
    raise ValueError(f"unknown baseline {baseline!r}")


def score(es: EvalSet, verdict_list: list[str], note: str) -> dict[str, Any]:
    """A set's metrics, each verdict counted once per example its session stands for (as for the model)."""
    scores = Scores()
    for v, members in zip(verdict_list, es.members, strict=True):
        for ex in members:
            scores.add(ex.label, v, True)
    s = scores.summary()
    s.update({"judged_prompts": len(es.sessions), "note": note,
              "flag_rate": round((s["tp"] + s["fp"]) / max(1, s["labelled"]), 4)})
    return s


def score_sets(fitted: Fitted, sets: list[EvalSet],
               kb: Callable[[Session, str], str] | None = None) -> dict[str, dict[str, Any]]:
    """``{baseline: {"sets": {set name: metrics}}}`` for every baseline that applies to each set."""
    out: dict[str, dict[str, Any]] = {}
    if kb is not None:
        out["kb"] = {"sets": {es.name: score(es, [kb(s, es.source) for s in es.sessions],
                                             "knowledge-base rules only, no model") for es in sets}}
    for b in ("keyword", "count_lr", "tfidf_lr", "knn"):
        out[b] = {"sets": {}}
        for es in sets:
            got = verdicts(fitted, b, es)
            if got is not None:
                out[b]["sets"][es.name] = score(es, *got)
    return out


def _normal_only(s: dict[str, Any]) -> bool:
    return s["tp"] + s["fn"] == 0


def _cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    return f"flagged {s['flag_rate']:.0%}" if _normal_only(s) else f"{s['f1']:.3f}"


def comparison_table(model: dict[str, dict[str, Any]], baselines: dict[str, dict[str, Any]], model_label: str,
                     split: str) -> str:
    """Markdown: one row per set: anomalous items, the model's F1 and each baseline's (``flagged x%`` on a
    normal-only set, where lower is better; ``-`` where a baseline does not apply)."""
    names = [b for b in NAMES if b in baselines]
    head = (f"| split | set | anomalous / items | {model_label} | " + " | ".join(NAMES[b] for b in names) + " |\n"
            "|---|---|---|---|" + "---|" * len(names))
    sets = list(dict.fromkeys([*model, *(n for b in names for n in baselines[b]["sets"])]))
    rows = []
    for name in sets:
        ref = model.get(name) or next(baselines[b]["sets"][name] for b in names if name in baselines[b]["sets"])
        rows.append(f"| {split} | {name} | {ref['tp'] + ref['fn']} / {ref['labelled']} | {_cell(model.get(name))} | "
                    + " | ".join(_cell(baselines[b]["sets"].get(name)) for b in names) + " |")
    return "\n".join([head, *rows])


def loses(model: dict[str, dict[str, Any]], baselines: dict[str, dict[str, Any]], model_label: str,
          min_anomalies: int = 10) -> list[str]:
    """One line per (set, baseline) where the model does worse: lower F1, or on a normal-only set a higher share
    flagged. Sets with fewer than ``min_anomalies`` anomalous items are marked as too small to decide."""
    out = []
    for name, m in model.items():
        for b, bname in NAMES.items():
            s = baselines.get(b, {}).get("sets", {}).get(name)
            if s is None:
                continue
            if _normal_only(m):
                if m["flag_rate"] > s["flag_rate"]:
                    out.append(f"{model_label} loses to {bname} on {name}: flagged {m['flag_rate']:.0%} vs "
                               f"{s['flag_rate']:.0%} of normal windows")
            elif m["f1"] < s["f1"]:
                n = m["tp"] + m["fn"]
                small = f" (only {n} anomalous items: too few to decide)" if n < min_anomalies else ""
                out.append(f"{model_label} loses to {bname} on {name}: F1 {m['f1']:.3f} vs {s['f1']:.3f}{small}")
    return out


def main(argv: list[str] | None = None) -> None:
    from training.config import load
    from training.evaluate import baseline_report, baseline_results, build_sets, eval_inputs, kb_baseline
    from training.held_out_rules import held_out
    from training.pipeline import prepare_base

    ap = argparse.ArgumentParser(description="Score the baselines (no model) on the evaluation sets of a config.")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--release", type=Path, help="a released model's manifest.json: its evaluation beside the baselines")
    ap.add_argument("--out", type=Path, help="where to write baselines.json (default: <config out>/eval)")
    ap.add_argument("--smoke", action="store_true", help="a slice of the data and a few items per set")
    a = ap.parse_args(argv)
    cfg = load(a.config)
    p, dc, corpus = eval_inputs(cfg, a.config, prepare_base(cfg), a.smoke)
    test_sets = build_sets(corpus, p, p.split, val_mode=False, datasets=dc.datasets)
    val_sets = build_sets(corpus, p, "val", val_mode=True, datasets=dc.datasets)
    out = a.out or Path(cfg.get("out", "build/training")) / "eval"
    with held_out(corpus.splits, out) as dropped:  # the KB rules as the evaluate stage scores them (review)
        result = {"data_hash": corpus.hash(), "rules_dropped": dropped,
                  **baseline_results(corpus, test_sets, val_sets, kb_baseline(test_sets))}
    (out / "baselines.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result["trained_on"], indent=1))
    model: dict[str, Any] = {}
    label = "model"
    if a.release:
        man = json.loads(a.release.read_text())
        stage = "grpo" if man.get("released_stage") == "sft+grpo" else "sft"
        ev = man.get("metrics", {}).get("eval", {})
        model = {split: ev.get(split, {}).get(stage, {"sets": {}}) for split in ("test", "val")}
        label = f"{man['name']} {man['version']} ({man['released_stage']})"
        if man.get("data_hash") != corpus.hash():
            print(f"warning: {a.release} was evaluated on data {man.get('data_hash')}, the baselines on "
                  f"{corpus.hash()}: the splits differ", flush=True)
        if "rules_dropped" not in man.get("metrics", {}).get("eval", {}):
            print(f"warning: {a.release} was judged with the served template rules (before 2026-12-07), the KB "
                  "baseline here with the rules cut to training evidence (training.held_out_rules): its template "
                  "figures rest partly on words read off the test templates", flush=True)
    print(baseline_report(model, result, label))
    print(f"wrote {out / 'baselines.json'}")


if __name__ == "__main__":
    main()
