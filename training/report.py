"""Write ``training/RESULTS.md`` from a pipeline run's outputs (data report, SFT/GRPO metrics, evaluation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.export import derived_from, lineage, released_cut
from training.gate import gate_table
from training.sft import chain_text


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _losses(m: dict[str, Any]) -> str:
    """A run's logged losses as ``step: loss, ...``."""
    return ", ".join(f"{x.get('step')}: {float(x['loss']):.3f}" for x in m.get("log", []) if "loss" in x)


def _adapter(src: dict[str, Any]) -> str:
    """A ``continued_from`` record as text: ``name version (path)`` for a released adapter, else its path."""
    return f"{src['name']} {src.get('version', '')} ({src['adapter']})" if src.get("name") else src["adapter"]


def write_results(out: Path, dest: Path, config_path: str, notes: str = "") -> Path:
    from training.evaluate import MIN_ANOMALIES, MODEL_NAMES, baseline_report, results_table

    data = _load(out / "data/data_report.json") or {}
    sft = _load(out / "sft/sft_metrics.json") or {}
    grpo = _load(out / "grpo/grpo_metrics.json") or {}
    ev = _load(out / "eval/metrics.json") or {}
    lines = ["# rationad training results", "",
             f"Produced by `python -m training.pipeline --config {config_path}` (stages prepare -> data -> SFT -> GRPO "
             "-> evaluate -> gate -> export). Evaluation runs through the daemon's serving path "
             "(`rationad.replay.judge_sessions`, vLLM engine client, constrained output, greedy) on the merged model.",
             ""]
    if ev.get("test"):
        lines += ["## Test results", "", results_table(ev["test"]), "",
                  "P/R/F1 are session-level for HDFS (each judged view counts for every test session with that view) and "
                  "template-level for BGL/Spirit. *format valid*: share of answers the daemon's parser accepts; "
                  "*grounded*: share of rationales that cite only lines of their session; *flagged*: share judged "
                  "anomalous."
                  + (" Judged, and the knowledge-base rules scored, with the template rules cut to the words "
                     "training-split templates evidence (`training.held_out_rules`; the served rules' other words were "
                     "read off validation or test templates): dropped "
                     + (", ".join(f"`{w}`" for w in ev["rules_dropped"]) or "none") + "."
                     if "rules_dropped" in ev else ""),
                  "", "![precision-recall](pr_curve.png)", ""]
    released = (ev.get("choice") or {}).get("released", "sft")
    if ev.get("baselines") and released in (ev.get("test") or {}):
        label = f"{MODEL_NAMES[released]} (released)"
        lines += ["## Baselines", "",
                  "Scored on the same sets as the model, no model involved (`training/baselines.py`): the knowledge-base "
                  "rules; a keyword rule (any line with a word such as error, fail, fatal, exception); a logistic "
                  "regression on template-count vectors (session sets); TF-IDF + logistic regression (template sets; "
                  "on windows, any template it flags). Each learned baseline is fitted on the training split only: "
                  + "; ".join(f"{k}: {v}" for k, v in ev["baselines"].get("trained_on", {}).items())
                  + ". F1, or on a normal-only set the share flagged (lower is better); `-`: does not apply.", "",
                  baseline_report({"test": ev["test"][released], "val": (ev.get("val") or {}).get(released, {})},
                                  ev["baselines"], label)]
    if ev.get("choice"):
        c = ev["choice"]
        lines += ["## Released model", "",
                  f"Released: **{'SFT+GRPO' if c['released'] == 'grpo' else 'SFT only'}**, the better mean F1 on the "
                  f"validation sets with at least {MIN_ANOMALIES} anomalous items: {json.dumps(c['validation_mean_f1'])}.", ""]
        for m, v in (ev.get("val") or {}).items():
            for name, s in v["sets"].items():
                lines.append(f"- validation, {'SFT' if m == 'sft' else 'SFT+GRPO'}, {name}: P {s['precision']:.3f} "
                             f"R {s['recall']:.3f} F1 {s['f1']:.3f} ({s['labelled']} items)")
        lines.append("")
    gate = _load(out / "eval/gate.json")
    if gate:
        lines += [f"Release gate (`training/gate.py`): {'passed' if gate['passed'] else 'failed'}: {gate['reason']}.", ""]
        if gate.get("scores"):
            lines += [gate_table(gate), ""]
    lines += ["## Training", ""]
    if sft:
        p = sft.get("params", {})
        src = sft.get("continued_from")
        what = f"SFT continuing the adapter {_adapter(src)} on" if src else "SFT:"
        lines.append(f"- {what} {sft.get('examples')} examples, {sft.get('steps')} optimizer steps, "
                     f"{sft.get('seconds')} s wall clock, mean train loss {sft.get('train_loss'):.4f}"
                     f"{' (stopped by the wall-clock guard)' if sft.get('stopped_early') else ''}; LoRA r={p.get('lora_r')} "
                     f"alpha={p.get('lora_alpha')}, lr {p.get('learning_rate')}, batch {p.get('batch_size')}x"
                     f"{p.get('grad_accum')}, layers from {p.get('layers_from')}.")
        if losses := _losses(sft):
            lines.append(f"- SFT loss by step: {losses}")
        if chain := chain_text(sft):
            lines.append(f"- SFT reached its end in {len(sft['runs'])} runs, each resuming the last one's checkpoint"
                         f"{chain}.")
    grown = lineage(sft)
    for where, m in grown:  # the continuations the released SFT adapter grew from, newest first
        src = m.get("continued_from")
        start = _adapter(src) if src else "the base model"
        lines.append(f"- which continued {where}: SFT from {start}, {m.get('examples')} examples, {m.get('steps')} "
                     f"steps in {m.get('seconds')} s at lr {m['params'].get('learning_rate')} (seed "
                     f"{m['params'].get('seed')}), mean loss {m.get('train_loss'):.4f}; loss by step: {_losses(m)}")
    cut, untrained = released_cut(out, released, None)  # the released adapter itself is a cut
    if cut is None:
        cut = derived_from(sft)  # ... or its SFT chain began at one
    if cut is not None:
        e, src = cut["energy_kept"], cut.get("source") or {}
        what = (f"{src.get('name')} {src.get('version')} (adapter sha256 {src.get('adapter_sha256')}) cut from LoRA "
                f"r={cut['rank'][0]} to r={cut['rank'][1]} by the truncated SVD of each update "
                f"(`training.shrink_adapter`; energy kept: min {e['min']:.3f}, median {e['median']:.3f}, mean "
                f"{e['mean']:.3f})")
        lines.append(f"- The released adapter is {what}, with no training since." if untrained
                     else f"- which started from {what}")
    if grpo:
        lines.append(f"- GRPO: {grpo.get('steps')} steps in {grpo.get('seconds')} s; mean reward by step "
                     f"{grpo.get('reward_by_step')}; params {json.dumps({k: grpo['params'][k] for k in ('prompts_per_step', 'generations', 'max_completion_length', 'learning_rate', 'beta', 'temperature')})}")
        if chain := chain_text(grpo):
            lines.append(f"- GRPO reached its end in {len(grpo['runs'])} runs, each resuming the last one's checkpoint"
                         f"{chain}.")
    if ev.get("test"):
        for m, r in ev["test"].items():
            if m == "kb":
                continue
            lines.append(f"- vLLM engine start for the {m} model: {r.get('engine_start_seconds')} s")
    lines += ["", "## Data", ""]
    for r in data.get("reports", []):
        lines += ["```", r, "```"] if "\n" in r else [f"- {r}"]
    if data.get("rationales"):
        ra = data["rationales"]
        lines += ["", f"- Rationales for the SFT rows: {ra['rationales']}, agreeing with the label: "
                      f"{ra['agree_with_label']} ({ra['agreement']:.0%}); the knowledge base could not explain "
                      f"the label in {json.dumps(ra['unexplained_by_kb'])} (those rationales say so); mean length "
                      f"{ra['mean_chars']:.0f} characters.", f"- Data hash: `{data.get('data_hash')}`"]
    if notes:
        lines += ["", "## Notes", "", notes]
    dest.write_text("\n".join(lines) + "\n")
    return dest
