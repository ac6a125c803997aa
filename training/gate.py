"""Release gate: a candidate replaces the released adapter only if it does not regress on validation.

The ``evaluate`` stage picks the candidate (SFT or SFT+GRPO); this stage judges that candidate and the adapter now
released in ``models/<name>/`` on the same validation subset, through the same serving path, on this machine (so
dtype and CPU are the same for both), and writes ``eval/gate.json``. The rule is "no regression on any validation set
large enough to measure" (F1 on a set with anomalies; the share flagged on a normal-only set: an unseen system's
normal windows judged by template, as the daemon judges a system it has no dialect for), not a mean F1: the
validation split holds only 4 anomalous BGL and 7 Spirit templates, so one template more or less moves a mean by
0.1-0.3 (a candidate worse on every test set passed a mean-F1 gate 0.71 to 0.50 on that noise; training/RESULTS.md).
``export`` reads it and refuses to replace the released adapter with a candidate that scores lower, unless told to
(``--force-release``).

Scores are cached in ``eval/gate/cache/<key>.json``, the key naming everything a score depends on: the merged
weights (base and adapter files), the serving settings and dtype, the prompt version, and every judged session with
its labels, and the code that serves, parses and checks answers (``SCORING_CODE``). A rerun (a new candidate
against the same release) judges only what changed.

Size: the released adapter must stay within ``[release] max_adapter_bytes`` (5,000,000 bytes for the CPU model:
0.2.0, LoRA r=16 on 16 layers, was 5,239,544 bytes). The gate measures the candidate's exported (bfloat16) file
before judging anything and fails a candidate over the limit; export checks the file it writes again, before it
replaces the released adapter, and ``--force-release`` does not lift it (raise the limit in the config instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.evaluate import MIN_ANOMALIES  # smaller validation sets are reported but do not gate
from training.held_out_rules import held_out, rules_digest
from training.jsonfile import read_json, write_json


class GateError(SystemExit):
    """The export would replace the released adapter with a worse (or unchecked) one."""


@dataclass(slots=True)
class ReleaseParams:
    """``[release]``: limits a released adapter must meet."""

    max_adapter_bytes: int = 5_000_000  # the exported adapter_model.safetensors (bfloat16); 0 = no limit


def size_verdict(path: Path, limit: int) -> dict[str, Any]:
    """Whether the exported adapter file at ``path`` is within ``limit`` bytes (``passed``, ``bytes``, ``reason``)."""
    size = path.stat().st_size
    ok = not limit or size <= limit
    return {"passed": ok, "bytes": size, "limit_bytes": limit,
            "reason": f"adapter {size:,} bytes {'within' if ok else 'over'} the limit of {limit:,} bytes "
                      "([release] max_adapter_bytes)" if limit else f"adapter {size:,} bytes (no size limit)"}


def exported_size(adapter: Path, limit: int) -> dict[str, Any]:
    """:func:`size_verdict` of the file export would write for ``adapter`` (its weights in bfloat16)."""
    from training.export import _bf16_copy

    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "adapter_model.safetensors"
        _bf16_copy(adapter / "adapter_model.safetensors", dst)
        return size_verdict(dst, limit)


# A normal-only validation set (an unseen system's normal windows) gates when it holds this many windows: the
# candidate may flag up to the share its best rival flags, or this share (issue 16's target for an unseen system)
# when that is more. Without it, a candidate that read an unknown system's routine lines as HDFS failures (0.2.1-rc1:
# 20 of 20 Proxifier windows flagged at template level) passed a gate made of trained systems only.
MIN_NORMAL_WINDOWS = 10
NORMAL_FLAG_ALLOWANCE = 0.10
# On a set with anomalies, the share of items a candidate leaves unjudged (dead-lettered when served) may exceed the
# released model's by this much.
UNJUDGED_ALLOWANCE = 0.01


def flag_rate(metrics: dict) -> float | None:
    """The share of a normal-only set's windows flagged or left unjudged (a window the model could not answer is
    not one it cleared), or None when the set holds anomalies or too few windows."""
    n = metrics.get("labelled") or 0
    if metrics["tp"] + metrics["fn"] or n < MIN_NORMAL_WINDOWS:
        return None
    # a window both flagged and unjudged is one window not cleared (counted twice, a rate reached 200%, and a
    # released model's inflated rate let a candidate flagging more pass)
    return (metrics["fp"] + (metrics.get("unjudged") or 0) - (metrics.get("unjudged_flagged") or 0)) / n


SERVED = ("precision", "recall", "f1", "tp", "fp", "fn", "tn", "unjudged_flagged")


def as_served(metrics: dict) -> dict:
    """A model's set metrics at the verdicts the daemon serves (``served``: at the judging level's default
    threshold, ``training.evaluate.set_metrics``), its written (greedy) answers kept as ``greedy_f1``; unchanged
    when there are none (a baseline, or verdicts judged before they were kept)."""
    at = metrics.get("served")
    if not at:
        return metrics
    return metrics | {k: at[k] for k in SERVED if k in at} | {"greedy_f1": metrics.get("f1")}


def served_pair(candidate: dict[str, dict], released: dict[str, dict] | None
                ) -> tuple[dict[str, dict], dict[str, dict] | None]:
    """Both models' sets at their served verdicts (:func:`as_served`), set by set where both have them; a set only
    one model has served verdicts for compares both models' written answers (served beside written would compare
    two rules)."""
    both = {k for k, v in candidate.items()
            if v.get("served") and (released is None or k not in released or released[k].get("served"))}
    cand = {k: as_served(v) if k in both else v for k, v in candidate.items()}
    rel = None if released is None else {k: as_served(v) if k in both else v for k, v in released.items()}
    return cand, rel


def decide(candidate: dict[str, dict], released: dict[str, dict] | None,
           baselines: dict[str, dict[str, dict]] | None = None, *, margin: float = 0.0,
           min_anomalies: int = MIN_ANOMALIES) -> dict[str, Any]:
    """The release rule (issue 16, item 6) on the validation sets with at least ``min_anomalies`` anomalous items:
    the candidate's F1 is at least the released adapter's and at least the best baseline's (``{baseline: {set:
    metrics}}``, fitted on the training split), each minus ``margin``, and its ``faithful_rate`` (where both have one)
    at least the released adapter's minus ``margin``. Both models are compared on the verdicts the daemon would
    serve (:func:`as_served`: at the default ``[judge]`` thresholds), not their written answers: 0.3.3's first
    candidate answered one short HDFS view normal greedily that the served session threshold flags, and lost on a
    verdict nobody is served. On a normal-only set of at least ``MIN_NORMAL_WINDOWS``
    windows it flags no larger a share than the released adapter or any baseline, beyond ``NORMAL_FLAG_ALLOWANCE``
    (``flag_rate``). Sets are ``{name: {"f1", "tp", "fn", "fp", "labelled", ...}}``; ties go to the candidate. With no
    release and no baselines there is nothing to lose to: it passes."""
    baselines = baselines or {}
    had_served = {k for k, v in candidate.items() if v.get("served")}
    candidate, released = served_pair(candidate, released)
    if released is None and not baselines:
        return {"passed": True, "reason": "no released adapter or baseline to compare with", "gating_sets": []}

    def rivals_of(k: str) -> list[tuple[str, dict]]:
        return ([("released", released[k])] if released is not None and k in released else []) + \
            [(b, sets[k]) for b, sets in sorted(baselines.items()) if k in sets]

    gating = [k for k, v in candidate.items() if rivals_of(k)
              and (v["tp"] + v["fn"] >= min_anomalies or flag_rate(v) is not None)]
    if not gating:
        return {"passed": False, "gating_sets": [],
                "reason": f"no validation set has {min_anomalies} anomalous items: nothing to decide on"}
    losses, detail = [], []
    for k in gating:
        c, rivals = candidate[k], rivals_of(k)
        rate = flag_rate(c)
        if rate is not None:  # normal only: fewer flagged is better
            rated = [(name, flag_rate(r)) for name, r in rivals]
            rated = [(name, x) for name, x in rated if x is not None]
            for name, x in rated:
                if rate > max(x, NORMAL_FLAG_ALLOWANCE) + margin:
                    unjudged = f", {c['unjudged']} of them unjudged" if c.get("unjudged") else ""
                    losses.append(f"{k}: flagged {rate:.0%} of normal windows{unjudged} > {name} {x:.0%} (allowance "
                                  f"{NORMAL_FLAG_ALLOWANCE:.0%})")
            if rated:
                best_name, best_rate = min(rated, key=lambda x: x[1])
                detail.append(f"{k}: flagged {rate:.0%} vs best other {best_name} {best_rate:.0%}")
            continue
        for name, r in rivals:
            if c["f1"] < r["f1"] - margin:
                losses.append(f"{k}: F1 {c['f1']:.4f} < {name} {r['f1']:.4f}")
        best = max(rivals, key=lambda x: x[1]["f1"])
        greedy = f" (written answers {c['greedy_f1']:.4f})" if c.get("greedy_f1") not in (None, c["f1"]) else ""
        written = ("" if "greedy_f1" in c or k not in had_served
                   else " (written answers: the released model's verdicts have no served ones)")
        detail.append(f"{k}: F1 {c['f1']:.4f}{greedy}{written} vs best other {best[0]} {best[1]['f1']:.4f}")
        rel = released.get(k) if released is not None else None
        # F1 does not see an item left unjudged (a malformed answer the daemon dead-letters) that is normal: it counts
        # as a true negative, so a candidate whose format collapsed on normal sessions passed on F1 alone
        if rel is not None and c.get("labelled") and rel.get("labelled"):
            cu, ru = (c.get("unjudged") or 0) / c["labelled"], (rel.get("unjudged") or 0) / rel["labelled"]
            if cu > ru + UNJUDGED_ALLOWANCE + margin:
                losses.append(f"{k}: {cu:.1%} of items unjudged > released {ru:.1%} (allowance "
                              f"{UNJUDGED_ALLOWANCE:.0%})")
        if rel is not None and c.get("faithful_rate") is not None and rel.get("faithful_rate") is not None \
                and c["faithful_rate"] < rel["faithful_rate"] - margin:
            losses.append(f"{k}: faithful {c['faithful_rate']:.4f} < released {rel['faithful_rate']:.4f}")
    small = sorted(set(candidate) - set(gating))
    reason = (f"loses on {'; '.join(losses)} ({'; '.join(detail)})" if losses
              else f"loses nowhere ({'; '.join(detail)})")
    if small:
        reason += f"; not gating (under {min_anomalies} anomalous items): {', '.join(small)}"
    return {"passed": not losses, "reason": reason, "gating_sets": gating, "losses": losses}


def gate_table(gate: dict[str, Any]) -> str:
    """Markdown: per validation set, the candidate's F1 and faithful rate beside the released adapter's and each
    baseline's F1, and whether the set gates. A model's F1 is that of its served verdicts (:func:`as_served`), its
    written answers' in brackets where they differ."""
    scores = gate.get("scores", {})
    cand, rel = served_pair(scores.get("candidate", {}).get("sets", {}), scores.get("released", {}).get("sets", {}))
    rel = rel or {}
    base = gate.get("baselines", {})
    names = sorted(base)
    head = ["| set | gates | candidate F1 | candidate faithful | released F1 | released faithful | "
            + " | ".join(f"{b} F1" for b in names) + " |",
            "|---|---|---|---|---|---|" + "---|" * len(names)]

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    def f1(m: dict) -> str:  # a normal-only set shows the share of its windows flagged (lower is better)
        rate = flag_rate(m) if {"tp", "fn", "fp"} <= m.keys() else None
        if rate is not None:
            return f"flagged {rate:.0%}"
        greedy = m.get("greedy_f1")
        return f(m.get("f1")) + (f" ({f(greedy)})" if greedy is not None and greedy != m.get("f1") else "")

    rows = []
    for k, c in cand.items():
        r = rel.get(k, {})
        rows.append(f"| {k} | {'yes' if k in gate.get('gating_sets', []) else 'no'} | {f1(c)} | "
                    f"{f(c.get('faithful_rate'))} | {f1(r)} | {f(r.get('faithful_rate'))} | "
                    + " | ".join(f1(base[b].get(k, {})) for b in names) + " |")
    return "\n".join(head + rows)


def released_adapter(cfg: dict) -> Path | None:
    path = Path("models") / cfg.get("name", "rationad-lora")
    return path if (path / "adapter_config.json").is_file() else None


def adapter_sha(folder: Path | None) -> str | None:
    """The sha256 (16 hex digits) of ``folder``'s adapter weights, or None (no folder, no weights)."""
    from training.sft import file_sha256

    f = None if folder is None else Path(folder) / "adapter_model.safetensors"
    return file_sha256(f) if f is not None and f.is_file() else None


def candidate_identity(out: Path) -> tuple[str, str | None]:
    """(stage, adapter file sha256) of the candidate the evaluate stage chose (``sft`` without a choice). A
    ``GateError`` when an adapter the evaluation judged has changed since (SFT trained again after an evaluation that
    chose GRPO trained from the old one): the gate judged and export released it with the old evaluation's figures
    in its manifest (review, 2026-12-07)."""
    choice_file = out / "eval" / "choice.json"
    choice = read_json(choice_file, GateError) if choice_file.is_file() else {"released": "sft"}
    stage = choice["released"]
    sha = adapter_sha(out / stage / "adapter")
    # every adapter the evaluation judged (an evaluation from before they were recorded: none): GRPO's figures are
    # of the SFT adapter it was trained from as well
    for m, judged in (choice.get("adapters") or {}).items():
        if adapter_sha(out / m / "adapter") != judged:
            raise GateError(f"{choice_file}: the evaluation judged the {m} adapter {judged}, but {out / m / 'adapter'} "
                            f"now holds {adapter_sha(out / m / 'adapter')}: its figures are not this candidate's; run "
                            "--stages evaluate,gate,export again (grpo first, where GRPO was trained from the old SFT "
                            "adapter)")
    return stage, sha


def check_export(out: Path, smoke: bool, force: bool, released: Path | None = None) -> dict[str, Any] | None:
    """What export does with the gate's verdict: raise :class:`GateError` for a failed or missing gate (real runs),
    for a candidate other than the one it judged, or when the released adapter (``released``, the one export would
    replace) is not the one it was compared with."""
    if smoke:
        return None
    f = out / "eval" / "gate.json"
    gate = read_json(f, GateError) if f.is_file() else None
    if force:
        return gate
    if gate is None:
        raise GateError(f"export: {f} missing; run the gate stage (--stages gate,export) or pass --force-release")
    if not gate["passed"]:
        raise GateError(f"export: the candidate did not pass the release gate ({gate['reason']}); the released "
                        "adapter stays. Pass --force-release to replace it anyway.")
    judged = (gate.get("candidate_stage"), gate.get("candidate_adapter_sha256"))
    now = candidate_identity(out)
    if judged != now:  # retrained, or the other stage chosen, since the gate ran: it never judged this adapter
        raise GateError(f"export: {f} passed the {judged[0]} adapter {judged[1]}, but the candidate now is the "
                        f"{now[0]} adapter {now[1]}: run the gate again (--stages gate,export)")
    # another run exported since (or a gate from before this was recorded): the candidate never met what it replaces
    holds = adapter_sha(released)
    if "released_adapter_sha256" not in gate or gate["released_adapter_sha256"] != holds:
        raise GateError(f"export: {f} compared the candidate with the released adapter "
                        f"{gate.get('released_adapter_sha256', '(not recorded)')}, but {released} now holds "
                        f"{holds}: run the gate again (--stages gate,export)")
    return gate


def score_key(merged: Path, serving: str, sets: list) -> str:
    """Cache key of a validation score: the merged folder (named by base and adapter hash), ``serving`` (settings,
    dtype and prompt version as text), and each set's name, sessions (the lines the model reads) and member labels."""
    h = hashlib.sha256(f"{merged.name}\n{serving}".encode())
    for es in sets:
        h.update(f"\n[{es.name}]".encode())
        for session, members in zip(es.sessions, es.members, strict=True):
            h.update(f"\n{session.key}\t{','.join(m.label for m in members)}\t".encode())
            h.update("\x1f".join(line.message for line in session.lines).encode())
    return h.hexdigest()[:20]


ROOT = Path(__file__).resolve().parents[1]
# The code a cached score depends on besides the model and its settings: how answers are served and parsed, how a
# score is read from the engine's logprobs and which threshold a session is served at (the gate compares served
# verdicts), how windows are decided by template, how the daemon writes an HDFS walk (``rationad.facts``, from the
# knowledge base), and how faithfulness is checked. A change to any of them judges both models again (before, a
# checker changed since the released model's scores were cached compared two checkers' rates).
SCORING_CODE = ("rationad/answer.py", "rationad/config.py", "rationad/events.py", "rationad/faithful.py",
                "rationad/hdfs_kb.py", "rationad/injection.py", "rationad/judge.py", "rationad/model/base.py",
                "rationad/model/engine.py", "rationad/prompt.py", "rationad/records.py", "rationad/replay.py",
                "rationad/template_book.py", "rationad/template_rules.py", "rationad/facts.py",
                "rationad/data/hdfs_kb.json", "rationad/data/template_rules.json", "training/evaluate.py",
                "training/faithfulness.py", "training/knowledge")


def scoring_code(files: tuple[str, ...] = SCORING_CODE, root: Path = ROOT) -> str:
    """A digest of ``files`` (folders: every file under them), for :func:`serving_identity`."""
    h = hashlib.sha256()
    for name in files:
        p = root / name
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file() and f.suffix != ".pyc":
                h.update(f"\n{f.relative_to(root)}\n".encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def serving_identity(merged: Path) -> str:
    """The serving side of :func:`score_key`: the evaluation's engine settings, resolved dtype, prompt version, the
    scoring code (:func:`scoring_code`) and the thresholds verdicts are served at (``served_judging``)."""
    import torch

    from rationad.model.dtype import resolve_dtype
    from rationad.prompt import PROMPT_VERSION

    from training.evaluate import served_judging, serving_config

    cfg = serving_config(merged)
    dtype = resolve_dtype(cfg.dtype, on_cpu=not torch.cuda.is_available())
    settings = cfg.model_dump(mode="json", exclude={"path"})
    thresholds = served_judging().model_dump(include={"threshold_session", "threshold_template",
                                                      "threshold_unfinished"})
    return json.dumps({"settings": settings, "dtype": dtype, "prompt": PROMPT_VERSION, "code": scoring_code(),
                       "rules": rules_digest(), "thresholds": thresholds}, sort_keys=True)


def cached_scores(cache: Path, key: str, judge) -> dict[str, Any]:
    """The scores stored under ``key``, else ``judge()``'s, stored for the next run (a stored file cut mid-write is
    judged again: it is a cache)."""
    f = cache / f"{key}.json"
    if f.is_file():
        with contextlib.suppress(ValueError):
            return read_json(f)
    return store_scores(cache, key, judge())


def store_scores(cache: Path, key: str, res: dict[str, Any]) -> dict[str, Any]:
    """Store ``res`` under ``key`` for :func:`cached_scores` (the evaluate stage stores its validation scores here)."""
    cache.mkdir(parents=True, exist_ok=True)
    write_json(cache / f"{key}.json", res)
    return res


def run_stage(cfg: dict, cfg_path: Path, out: Path, base: Path, smoke: bool) -> dict[str, Any]:
    from training.config import section
    from training.evaluate import build_sets, eval_inputs
    from training.sft import require_finished

    stage, candidate_sha = candidate_identity(out)
    require_finished(out / stage / f"{stage}_metrics.json")  # never judge a half-trained adapter
    size = exported_size(out / stage / "adapter", section(cfg, "release", ReleaseParams, cfg_path).max_adapter_bytes)
    print(f"[gate] {size['reason']}", flush=True)
    if not size["passed"]:  # nothing to judge: this candidate cannot be released
        gate = {"passed": False, "reason": size["reason"], "gating_sets": [], "candidate_stage": stage,
                "candidate_adapter_sha256": candidate_sha, "size": size}
        (out / "eval" / "gate.json").write_text(json.dumps(gate, indent=1) + "\n")
        print(f"[gate] FAILED: {gate['reason']}", flush=True)
        return gate
    p, dc, corpus = eval_inputs(cfg, cfg_path, base, smoke)
    models = {"candidate": out / stage / "adapter"}
    incumbent = released_adapter(cfg)
    if incumbent is not None:
        models["released"] = incumbent
    sets = build_sets(corpus, p, "val", val_mode=True, datasets=dc.datasets)
    # as the evaluate stage judges (and caches the candidate's scores): with the rules cut to training evidence
    with held_out(corpus.splits, out / "eval" / "gate"):
        return _judge_and_decide(out, base, p, corpus, sets, models, incumbent, stage, candidate_sha, size)


def _judge_and_decide(out: Path, base: Path, p, corpus, sets: list, models: dict[str, Path], incumbent: Path | None,
                      stage: str, candidate_sha: str, size: dict[str, Any]) -> dict[str, Any]:
    from training.baselines import fit, score_sets
    from training.evaluate import evaluate_model, f1_of, kb_verdict
    from training.merge_adapter import merged_folder

    scores: dict[str, Any] = {}
    for role, adapter in models.items():
        merged = merged_folder(base, adapter, cache=out / "merged")
        key = score_key(merged, serving_identity(merged), sets)
        cache = out / "eval" / "gate" / "cache"
        print(f"[gate] {role} ({adapter}): merged model {merged}"
              f"{', scores cached' if (cache / f'{key}.json').is_file() else ''}", flush=True)
        res = cached_scores(cache, key, lambda m=merged, r=role: asyncio.run(
            evaluate_model(m, sets, out / "eval" / "gate" / r, p.chunk)))
        scores[role] = {"adapter": str(adapter), "mean_f1": f1_of(res),
                        "sets": {k: {m: v.get(m) for m in ("precision", "recall", "f1", "tp", "fp", "fn", "tn",
                                                           "labelled", "faithful_rate", "unjudged", "served")}
                                 for k, v in res["sets"].items()}}
    if incumbent is not None:
        m = read_json(incumbent / "manifest.json") if (incumbent / "manifest.json").is_file() else {}
        scores["released"]["version"] = m.get("version")
    fitted = fit(corpus)  # the simple baselines, fitted on the training split only (seconds)
    baselines = {b: v["sets"] for b, v in score_sets(fitted, sets, kb_verdict).items() if v["sets"]}
    verdict = decide(scores["candidate"]["sets"], scores["released"]["sets"] if incumbent else None, baselines)
    gate = {**verdict, "candidate_stage": stage, "candidate_adapter_sha256": candidate_sha,
            "released_adapter_sha256": adapter_sha(incumbent), "size": size,
            "scores": scores,
            "baselines": {b: {k: {m: v[m] for m in ("precision", "recall", "f1", "tp", "fn", "fp", "labelled")}
                              for k, v in sets.items()}
                          for b, sets in baselines.items()}}
    (out / "eval" / "gate.json").write_text(json.dumps(gate, indent=1) + "\n")
    print(f"[gate] {'passed' if gate['passed'] else 'FAILED'}: {gate['reason']}", flush=True)
    return gate
