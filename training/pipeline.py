"""One command for the whole chain: prepare base -> data -> SFT -> GRPO -> evaluate -> release gate -> export.

    python -m training.pipeline --config training/configs/cpu.toml [--smoke] [--stages data,sft,...]

Each stage writes into the config's ``out`` folder and the next one reads from there, so a stage can be rerun alone.
``--smoke`` shrinks every stage (a slice of the data, a few steps) to check the chain end to end in minutes.

A training longer than one working session: SFT and GRPO write a resumable checkpoint every ``checkpoint_every_secs``
(config, or ``--checkpoint-every-secs``) and at their ``max_minutes`` stop; the next session continues with

    python -m training.pipeline --config training/configs/cpu.toml --stages sft,grpo,evaluate,gate,export --resume last

where each training stage resumes its newest checkpoint (same data order, optimizer, scheduler and RNG states), a
stage whose last run finished on the same base, data and configuration is skipped, a stage with nothing to resume
starts (GRPO after the SFT it continues finished), and a checkpoint of anything else, or a finished stage that trained
anything else (GRPO: other than an SFT adapter trained further since), is refused naming its file. A stage that stops
at its ``max_minutes`` ends the pipeline there, and a later stage run by name refuses its adapter
(``training.sft.require_finished``): no later stage trains or judges an unfinished adapter. ``--resume PATH`` names
one checkpoint (one training stage only). The chain of runs (which run resumed which checkpoint, steps, seconds) is in
``sft/sft_metrics.json`` and ``grpo/grpo_metrics.json`` under ``runs``, and from there in the exported manifest
(``metrics.sft.runs``, ``metrics.grpo.runs``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from training.jsonfile import write_json

STAGES = ("prepare", "data", "sft", "grpo", "evaluate", "gate", "export")


def prepare_base(cfg: dict) -> Path:
    given = (cfg.get("base") or {}).get("path") or ""
    if given:
        path = Path(given).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"base model folder {path} has no config.json")
        return path
    out = subprocess.run([sys.executable, "-m", "training.prepare_base"], capture_output=True, text=True)
    if out.returncode != 0:  # its error names the file (a bare CalledProcessError swallowed it: review 2026-12-07)
        said = out.stderr.strip().splitlines()
        raise SystemExit(f"[prepare] {said[-1] if said else f'training.prepare_base exited {out.returncode}'}")
    return Path(out.stdout.strip().splitlines()[-1])


def stage_data(cfg: dict, cfg_path: Path, out: Path, base: Path, smoke: bool) -> dict:
    from rationad.model.base import token_counter

    from training.config import section
    from training.data_injection import injected_copies
    from training.dataset import DataConfig, failure_kinds, load_corpus, select_sft, sft_rows, write_jsonl

    dc = section(cfg, "data", DataConfig, cfg_path)
    if smoke:
        dc = replace(dc, hdfs_rendered_limit=400, use_hdfs_raw=False, hdfs_normal_views=6, hdfs_anomalous_views=6,
                     template_normal=6, template_anomalous_upsample=1, hdfs_tails=min(dc.hdfs_tails, 4),
                     hdfs_heads=min(dc.hdfs_heads, 4), hdfs_reordered=min(dc.hdfs_reordered, 4))
    count = token_counter(base)
    corpus = load_corpus(dc, count)  # the daemon's own counter: same budget cuts as served
    train = select_sft(corpus.splits["train"], dc)
    train += injected_copies(train, dc.injection_share)  # training rows only: evaluation sets stay as logged
    if dc.hdfs_tails or dc.hdfs_heads:
        from training.data_fragments import head_examples, tail_examples

        for what, views, make in (("tails", dc.hdfs_tails, tail_examples),
                                  ("unfinished heads", dc.hdfs_heads, head_examples)):
            if not views:
                continue
            made = make(corpus.splits["train"], views, count_tokens=count, max_prompt_tokens=dc.max_prompt_tokens)
            train += made
            corpus.reports.append(f"fragments: {len(made)} distinct {what} of the {views} most common HDFS "
                                  f"training views ({sum(e.label == 'anomalous' for e in made)} anomalous)")
    if dc.hdfs_reordered:
        from training.data_reorder import reordered_examples, template_order

        held_out = {template_order(ex.view) for split in ("val", "test") for ex in corpus.splits[split]}
        made = reordered_examples(corpus.splits["train"], dc.hdfs_reordered, dc.hdfs_reorder_each, held_out,
                                  count_tokens=count, max_prompt_tokens=dc.max_prompt_tokens)
        train += made
        corpus.reports.append(f"reordered: {len(made)} adjacent-swap variants of the {dc.hdfs_reordered} most common "
                              f"HDFS training views ({sum(e.label == 'anomalous' for e in made)} anomalous)")
    rows, agreement = sft_rows(train)
    write_jsonl(rows, out / "data" / "sft_train.jsonl")
    val = select_sft(corpus.splits["val"], replace(dc, template_anomalous_upsample=1))
    val_rows, _ = sft_rows(val)
    write_jsonl(val_rows, out / "data" / "sft_val.jsonl")
    # Evaluation sets keep every session (with its id and split flags) so session-level metrics can be weighted.
    for split in ("val", "test"):
        write_jsonl([{"task": ex.task, "source": ex.source, "sid": ex.sid, "label": ex.label, "origin": ex.origin,
                      "view_key": ex.view_key, "unseen": bool(ex.extra.get("unseen")),
                      "template": ex.extra.get("template")} for ex in corpus.splits[split]],
                    out / "data" / f"{split}_index.jsonl")
    from rationad.neighbours import INDEX_FILE

    if corpus.neighbours is not None:
        corpus.neighbours.save(out / "data" / INDEX_FILE)
    else:  # an earlier data run's index is not these rows' (ship_neighbours reads it)
        (out / "data" / INDEX_FILE).unlink(missing_ok=True)
    report = {"data_hash": corpus.hash(), "reports": corpus.reports, "rationales": agreement,
              "sft_rows": len(rows), "sft_val_rows": len(val_rows), "hdfs_failure_kinds": failure_kinds(train)}
    write_json(out / "data" / "data_report.json", report)
    return report


def neighbours_k(cfg: dict, cfg_path: Path, out: Path, rows: list[dict] | None = None) -> int:
    """The ``k`` labelled neighbours the training rows' prompts carry (``trained_k``: what the model learned, not
    today's config); a ``NeighbourIndexError`` naming the rows file when ``[data] neighbours`` differs. Shipping the
    config's k rewrote the manifest of an adapter skipped as finished (k = 0 removed its index), and the daemon
    served a prompt the model never saw (review, 2026-12-07). Asked before training too: nothing trains that could
    not be shipped (the index is read: a cut or missing one was found only after SFT had trained, and the SFT stage
    skipped as finished on the next --resume never shipped it: review 2026-12-07). ``rows``: the rows file already
    read."""
    from rationad.neighbours import INDEX_FILE, NeighbourIndex, NeighbourIndexError

    from training.config import section
    from training.dataset import DataConfig, read_jsonl
    from training.neighbour_index import trained_k

    rows_file = out / "data" / "sft_train.jsonl"
    k = trained_k(read_jsonl(rows_file) if rows is None else rows)
    asked = section(cfg, "data", DataConfig, cfg_path).neighbours
    if asked != k:
        raise NeighbourIndexError(f"{rows_file}: its prompts carry {k} labelled neighbours, but {cfg_path} asks for "
                                  f"[data] neighbours = {asked}: the daemon would serve the model a prompt it never "
                                  f"saw; set neighbours = {k}, or rerun the data stage and train again")
    if k > 0:
        index_file = out / "data" / INDEX_FILE
        if not index_file.is_file():
            raise NeighbourIndexError(f"neighbour index {index_file}: missing (rerun the data stage)")
        NeighbourIndex.load(index_file)
    return k


def ship_neighbours(cfg: dict, cfg_path: Path, out: Path, adapter: Path, k: int | None = None) -> None:
    """A model trained with labelled neighbours carries their index (the daemon's judge reads it from there), with the
    ``k`` it was trained with (``neighbours_k``; ``k`` when the stage has asked already)."""
    from rationad.neighbours import INDEX_FILE

    from training.neighbour_index import ship, unship

    if not adapter.is_dir():
        return
    k = neighbours_k(cfg, cfg_path, out) if k is None else k
    if k == 0 and unship(adapter):
        print(f"[neighbours] {adapter}: trained without neighbours: an earlier run's index removed", flush=True)
    if k > 0:
        spec = ship(out / "data" / INDEX_FILE, k, adapter)
        print(f"[neighbours] {adapter}: {spec['entries']} entries, {spec['bytes']} bytes, k={k}", flush=True)


def main(argv: list[str] | None = None) -> None:
    from training.config import load

    ap = argparse.ArgumentParser(description="rationad training pipeline")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="a few steps on a slice of the data")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    ap.add_argument("--out", type=Path, help="override the config's work folder")
    ap.add_argument("--force-release", action="store_true",
                    help="export even if the candidate failed the release gate (or the gate did not run)")
    ap.add_argument("--resume", metavar="last|PATH",
                    help="SFT and GRPO continue from their newest checkpoint (last) or from this one (one stage); "
                         "a stage that already finished is skipped")
    ap.add_argument("--checkpoint-every-secs", type=float,
                    help="override [sft] and [grpo] checkpoint_every_secs (wall clock between resumable checkpoints)")
    a = ap.parse_args(argv)
    cfg = load(a.config)
    out = a.out or Path(cfg.get("out", "build/training")) / ("smoke" if a.smoke else "")
    out.mkdir(parents=True, exist_ok=True)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise SystemExit(f"unknown stages {bad}; known: {STAGES}")
    if a.resume not in (None, "last") and sum(s in ("sft", "grpo") for s in stages) != 1:
        raise SystemExit(f"--resume {a.resume}: a checkpoint path resumes one training stage; pass --stages sft or "
                         "--stages grpo (or --resume last)")
    base = prepare_base(cfg)
    print(f"[prepare] base model: {base}", flush=True)
    for stage in stages:
        t0 = time.monotonic()
        if stage == "prepare":
            continue
        if stage == "data":
            rep = stage_data(cfg, a.config, out, base, a.smoke)
            print("\n".join(rep["reports"]), flush=True)
            print(f"[data] rationales: {json.dumps(rep['rationales'])}", flush=True)
        elif stage == "sft":
            from training.config import section
            from training.dataset import read_jsonl
            from training.sft import (SFTParams, chain_text, finished_run, refuse_changed, run_identity, stage_resume,
                                      train_sft)

            p = section(cfg, "sft", SFTParams, a.config)
            if a.smoke:
                p = replace(p, max_steps=2, batch_size=2, grad_accum=1, save_steps=1000)
            if a.checkpoint_every_secs is not None:
                p.checkpoint_every_secs = a.checkpoint_every_secs
            rows = read_jsonl(out / "data" / "sft_train.jsonl")
            k = neighbours_k(cfg, a.config, out, rows)
            identity = run_identity("sft", base, rows, p, init_adapter=None)
            done = a.resume and finished_run(out / "sft" / "sft_metrics.json", identity)
            if a.resume and not done:
                refuse_changed(out / "sft" / "sft_metrics.json", identity)
            if done:
                print(f"[sft] finished already ({len(done['runs'])} run(s), {done['steps']} steps): not resumed",
                      flush=True)
                ship_neighbours(cfg, a.config, out, out / "sft" / "adapter", k)  # (a ship that failed last time)
                continue
            resume = stage_resume(a.resume, out / "sft" / "checkpoints", out / "sft" / "sft_metrics.json", "sft")
            m = train_sft(base, rows, out / "sft", p, resume=resume)
            ship_neighbours(cfg, a.config, out, out / "sft" / "adapter", k)
            print(f"[sft] loss {m['train_loss']:.4f}, {m['steps']} steps, {m['seconds']} s{chain_text(m)}", flush=True)
            if not _finished(m, "sft"):
                return
        elif stage == "grpo":
            from training.grpo import run_stage as grpo_stage

            k = neighbours_k(cfg, a.config, out)
            m = grpo_stage(cfg, a.config, out, base, a.smoke, resume=a.resume,
                           checkpoint_every_secs=a.checkpoint_every_secs)
            ship_neighbours(cfg, a.config, out, out / "grpo" / "adapter", k)
            if not _finished(m, "grpo"):
                return
        elif stage == "evaluate":
            from training.evaluate import run_stage as eval_stage

            eval_stage(cfg, a.config, out, base, a.smoke)
        elif stage == "gate":
            from training.gate import run_stage as gate_stage

            gate_stage(cfg, a.config, out, base, a.smoke)
        elif stage == "export":
            from training.export import run_stage as export_stage

            export_stage(cfg, a.config, out, base, a.smoke, force=a.force_release)
        print(f"[{stage}] done in {time.monotonic() - t0:.0f} s", flush=True)


def _finished(m: dict, stage: str) -> bool:
    """Whether a training stage's run finished; if it stopped at its ``max_minutes``, the later stages would train or
    judge an unfinished adapter: the pipeline stops there and says how to continue."""
    runs = m.get("runs") or []
    if runs and not runs[-1].get("finished"):
        print(f"[{stage}] stopped at {m.get('steps')} steps before the end (max_minutes): the stages after it are not "
              "run; continue in the next session with --resume last", flush=True)
        return False
    return True


if __name__ == "__main__":
    main()
