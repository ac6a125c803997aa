"""BGL lines judged by template as the daemon serves them: the content alone (as Loghub parses BGL, and as the
model's template training and the experts' label corrections are written) against the content behind BGL's
``TYPE COMPONENT LEVEL`` fields (``RAS KERNEL INFO ...``: the bgl dialect of ``--against``).

Same model, engine settings, prompts' code and threshold on both sides: one engine run (the daemon's default model
settings, ``training.evaluate.serving_config``) judges the distinct templates of both forms through replay's judge
(``rationad.replay.judging``), each at ``judge.threshold_template``; only the message each form's dialect gives a
line differs (``bgl_fields``, loaded from ``--against`` with ``bench/_common.module_at``).

Each of Loghub's BGL_2k lines takes its template's verdict. P/R/F1 by line and by template (anomalous when any of its
lines is), against the experts' corrected labels (a line whose Loghub template ``anomaly_patch.json`` rectifies takes
the rectified label, the rest Loghub's alert column: what training does to templates) and against the alert column
alone. Also: how many served prompts are identical to a prompt of the model's BGL template data
(``bgl_templates_dev.csv``, every split) and to one of its training split; the scores again on the lines whose
template's prompt is no training-split row (``held_out``: the leakage audit found 118 of the 265 corrected-anomalous
lines are training templates as they are); and every distinct template's verdict (``--json``). Data: Loghub
(github.com/logpai/loghub; Loghub, ISSRE 2023).

Usage: ``.venv/bin/python bench/bgl_templates.py --against 0a45e6b [--json bench/results/bgl_templates.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
from pathlib import Path

from _common import SHARED, default_model_dir, module_at, print_machine

BGL_2K = SHARED / "datasets" / "loghub" / "BGL_2k.log"
STRUCTURED = SHARED / "datasets" / "loghub" / "BGL_2k.log_structured.csv"
PATCH = SHARED / "datasets" / "rationanomaly" / "anomaly_patch.json"
DEV = SHARED / "datasets" / "templates" / "bgl_templates_dev.csv"


def line_labels() -> tuple[list[str], list[str]]:
    """(corrected, Loghub's) label of each BGL_2k line."""
    from training.data_bgl import corrected_line_labels

    corrected = corrected_line_labels(STRUCTURED, PATCH)
    rows = list(csv.DictReader(STRUCTURED.open(encoding="utf-8")))
    return [corrected[str(n)] for n in range(1, len(rows) + 1)], ["normal" if r["Label"] == "-" else "anomalous"
                                                                   for r in rows]


def prf(pairs: list[tuple[bool, bool]]) -> dict:
    tp = sum(p and t for p, t in pairs)
    fp = sum(p and not t for p, t in pairs)
    fn = sum(t and not p for p, t in pairs)
    return {"precision": round(tp / (tp + fp), 3) if tp + fp else 0.0,
            "recall": round(tp / (tp + fn), 3) if tp + fn else 0.0,
            "f1": round(2 * tp / (2 * tp + fp + fn), 3) if tp else 0.0, "tp": tp, "fp": fp, "fn": fn}


def scores(templates: list[str], verdicts: dict[str, str], labels: list[str]) -> dict:
    by_line = [(verdicts[t] == "anomalous", lab == "anomalous") for t, lab in zip(templates, labels, strict=True)]
    per_template: dict[str, bool] = {}
    for t, lab in zip(templates, labels, strict=True):
        per_template[t] = per_template.get(t, False) or lab == "anomalous"
    by_template = [(verdicts[t] == "anomalous", y) for t, y in per_template.items()]
    return {"lines": prf(by_line), "templates": prf(by_template), "anomalous_templates": sum(per_template.values())}


async def judge_all(templates: list[str], model: Path, threshold: float) -> dict[str, str]:
    from rationad.replay import judging
    from rationad.template_book import template_session
    from training.evaluate import serving_config

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    verdicts: dict[str, str] = {}
    async with judging(serving_config(model), "bgl") as judge:
        for i in range(0, len(templates), 64):
            for t, j in zip(templates[i:i + 64],
                            await judge.judge_many([template_session(t) for t in templates[i:i + 64]]), strict=True):
                verdicts[t] = j.verdict_at(threshold) or "unjudged"
    return verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", required=True, help="git revision whose bgl dialect kept TYPE COMPONENT LEVEL")
    ap.add_argument("--model", type=Path, default=None, help="merged model folder (default: the setup's default)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from rationad import dialects
    from rationad.config import JudgeConfig
    from rationad.prompt import build_view, user_message
    from rationad.template_book import template_of, template_session
    from training.data_templates import load_templates
    from training.splits import split_examples

    machine = print_machine()
    model = (a.model or default_model_dir()).expanduser()
    lines = BGL_2K.read_text(encoding="utf-8").splitlines()
    corrected, loghub = line_labels()
    assert len(lines) == len(corrected) == 2000
    forms = {"content": dialects.bgl_fields, f"fields + content ({a.against})":
             module_at(a.against, "rationad/dialects.py").bgl_fields}
    templates = {name: [template_of(fields(ln)[2]) for ln in lines] for name, fields in forms.items()}
    threshold = JudgeConfig().threshold_template  # one threshold, one engine, one judge for both forms
    distinct = sorted({t for ts in templates.values() for t in ts})
    verdicts = asyncio.run(judge_all(distinct, model, threshold))
    dev = load_templates(DEV, PATCH, "bgl")[0]
    trained = {user_message(e.view) for e in dev}
    train_split = {user_message(e.view) for e in split_examples(dev)["train"]}
    report = {"machine": machine, "model": str(model), "threshold": threshold, "against": a.against, "forms": {}}
    for name, ts in templates.items():
        prompt = {t: user_message(build_view("bgl", [ln.message for ln in template_session(t).lines], templated=True))
                  for t in set(ts)}
        held = [i for i, t in enumerate(ts) if prompt[t] not in train_split]
        report["forms"][name] = {
            "distinct_templates": len(set(ts)), "prompts_as_trained": len(set(prompt.values()) & trained),
            "prompts_of_training_split": len(set(prompt.values()) & train_split),
            "corrected": scores(ts, verdicts, corrected), "loghub": scores(ts, verdicts, loghub),
            "held_out": {"lines": len(held), "corrected": scores([ts[i] for i in held], verdicts,
                                                                  [corrected[i] for i in held])},
            "unjudged": sum(verdicts[t] == "unjudged" for t in set(ts)),
            "verdicts": {t: verdicts[t] for t in sorted(set(ts))}}
    print("| message | templates | prompts as trained (training split) | labels | line P / R / F1 | template P / R / "
          "F1 (anomalous templates) |")
    print("|---|---|---|---|---|---|")
    for name, f in report["forms"].items():
        for labels in ("corrected", "loghub", "held_out"):
            sc = f[labels] if labels != "held_out" else f["held_out"]["corrected"]
            ln, tp = sc["lines"], sc["templates"]
            what = labels if labels != "held_out" else f"corrected, {f['held_out']['lines']} lines of no training row"
            as_trained = f"{f['prompts_as_trained']} ({f['prompts_of_training_split']})"
            print(f"| {name} | {f['distinct_templates']} | {as_trained} | {what} | {ln['precision']} / {ln['recall']} / {ln['f1']} | {tp['precision']} / {tp['recall']} / "
                  f"{tp['f1']} ({sc['anomalous_templates']}) |")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
