"""CoT supervised fine-tuning: LoRA (peft) on the chat-formatted rows with TRL's SFTTrainer.

Rows are conversational prompt-completion pairs (``training.dataset.sft_rows``): SmolLM2's chat template has no
``{% generation %}`` markers, so instead of ``assistant_only_loss`` the prompt-completion format is used, and TRL's
``completion_only_loss`` puts the loss on the assistant turn only (``<think>`` + ``<answer>`` + end-of-turn).
A wall-clock guard stops training (and saves) when ``max_minutes`` is reached.

Resumable runs: every ``checkpoint_every_secs`` of wall clock (and every ``save_steps``) the trainer writes a checkpoint
(``DIR/checkpoints/checkpoint-<step>``: adapter, optimizer, scheduler, RNG states, trainer state) and this module adds
``rationad_run.json`` to it: what the run trains (base, data, parameters, starting adapter) and the chain of runs that
led to it. ``--resume last`` (the newest checkpoint in ``DIR/checkpoints``) or ``--resume PATH`` continues through
``Trainer.train(resume_from_checkpoint=...)``, which restores the optimizer, scheduler and RNG states and skips the
batches already trained; the epoch's data order is drawn from (seed, epoch), not from the global RNG, so a resumed run
sees the batches an uninterrupted one would (``tests/training/test_resume.py`` checks equal weights and losses). A
checkpoint of another base, data or configuration is refused with :class:`ResumeError` naming its file.

    python -m training.sft --config training/configs/cpu.toml --base BASE --rows DATA.jsonl --out DIR [--resume last]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.jsonfile import read_json, write_json
from training.prompt_stamp import stamp, trained_prompt

RUN_FILE = "rationad_run.json"  # written into every checkpoint: run identity and chain
# Parameters a resumed run may change: they decide when and how fast it runs, not what it trains.
RUN_LOCAL = ("max_minutes", "checkpoint_every_secs", "threads", "logging_steps", "save_steps")
# A base's weights in any format transformers loads from a folder, and the index files of sharded weights.
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.index.json")


class ResumeError(SystemExit):
    """A checkpoint that cannot be resumed: missing, or of another base, data or configuration; or a stage whose last
    run stopped unfinished, which must be continued before a later stage uses its adapter (names the file)."""


@dataclass(slots=True)
class SFTParams:
    learning_rate: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 2
    max_length: int = 1024
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                "gate_proj", "up_proj", "down_proj"])
    warmup_ratio: float = 0.05
    lr_scheduler: str = "constant_with_warmup"  # robust to a wall-clock stop; "cosine" when the run always finishes
    layers_from: int = 0  # LoRA only on decoder layers >= this (0 = all): cuts the backward pass on slow CPUs
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    max_steps: int = -1
    threads: int = 0  # torch threads (0 = torch's default)
    bf16: bool = False  # bf16 mixed precision (autocast); on CPUs with AMX / avx512_bf16 about 2x faster than float32
    # Recompute activations in the backward pass: saves memory for a 7B base on a GPU, costs about 2x per step on a
    # small model (with LoRA it also sends the backward through every layer); TRL turns it on unless told otherwise.
    gradient_checkpointing: bool = False
    logging_steps: int = 5
    save_steps: int = 40
    checkpoint_every_secs: float = 0.0  # also save a resumable checkpoint this often (wall clock); 0 = save_steps only
    seed: int = 0


def rows_sha256(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def weights_sha256(folder: Path) -> str:
    """A digest of a model folder's weights (every ``WEIGHT_FILES`` file, by name): two models of one architecture
    share their config.json, and a base folder reached through a symlink (``~/.cache/rationad/models/base``) can be
    repointed at other weights under the same name. Read once per file version (a run's identity is asked for more
    than once: the pipeline's skip check, then training). A folder with no weight file is refused
    (``BaseModelError``): its digest was that of nothing, shared by every base stored as ``pytorch_model.bin``
    (review, 2026-12-07)."""
    from training.prepare_base import BaseModelError

    root = Path(folder).resolve()
    files = sorted({f for pattern in WEIGHT_FILES for f in root.glob(pattern) if f.is_file()})
    if not files:
        raise BaseModelError(f"{folder}: no weight file ({', '.join(WEIGHT_FILES)}): not a model folder")
    return _weights_digest(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=8)
def _weights_digest(files: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _size, _mtime in files:
        f = Path(name)
        h.update(f"\n{f.name}\n".encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def run_identity(stage: str, base: Path, rows: list[dict], params: Any, **starts: Any) -> dict[str, Any]:
    """What a checkpoint trains: stage, base (its config.json and weights hashes), data (hash of the rows), the
    parameters that change the result, and what training started from (``starts``). A resume must match it."""
    params = {k: v for k, v in asdict(params).items() if k not in RUN_LOCAL}
    identity = {"stage": stage, "base": {"folder": Path(base).name,
                                         "config_sha256": file_sha256(Path(base) / "config.json"),
                                         "weights_sha256": weights_sha256(Path(base))},
                "data_sha256": rows_sha256(rows), "params": params, **starts}
    return json.loads(json.dumps(identity, default=str))  # as it reads back from a checkpoint


def start_or_resume(resume: str | Path | None, checkpoints: Path, identity: dict[str, Any]) -> RunChain:
    """The checkpoint to resume (checked against ``identity``) and its chain of runs. A fresh start refuses a folder
    that still holds an unfinished run's checkpoints (``--resume last`` continues it; delete it to start over)."""
    checkpoint = resolve_resume(resume, checkpoints)
    if checkpoint is None:
        left = sorted(checkpoints.glob("checkpoint-*")) if checkpoints.is_dir() else []
        if left:
            raise ResumeError(f"{checkpoints}: holds {', '.join(c.name for c in left)} of an unfinished run; pass "
                              f"--resume last to continue it, or delete {checkpoints} to start over")
        return RunChain([], None)
    return RunChain(check_resume(checkpoint, identity), checkpoint)


def stored_identity(identity: dict[str, Any] | None) -> dict[str, Any]:
    """A run identity as read back from a metrics or checkpoint file, in today's form: GRPO's ``sft_adapter`` named
    its path too before 2026-12-07 (it is known by its bytes now), and those runs must still be skipped as finished
    or resumed (review of that change)."""
    identity = dict(identity or {})
    adapter = identity.get("sft_adapter")
    if isinstance(adapter, dict) and "path" in adapter:
        identity["sft_adapter"] = {k: v for k, v in adapter.items() if k != "path"}
    return identity


def finished_run(metrics_file: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The stage's metrics when its last run finished training ``identity`` (``--resume`` skips such a stage)."""
    if not metrics_file.is_file():
        return None
    m = read_json(metrics_file, ResumeError)
    runs = m.get("runs") or []
    return m if runs and runs[-1].get("finished") and stored_identity(m.get("identity")) == identity else None


def stage_resume(resume: str | Path | None, checkpoints: Path, metrics_file: Path, stage: str) -> str | Path | None:
    """The pipeline's ``--resume last`` for one stage: ``"last"`` when ``checkpoints`` holds one; None (start) when the
    stage has nothing to resume (it never ran, or its last run finished: GRPO on an SFT adapter since changed is
    trained again; a finished stage that trained something else is refused before, ``refuse_changed``); a
    ``ResumeError`` naming the files when its last run stopped unfinished but its checkpoints are gone (its work would
    be lost). Other values are returned as they are."""
    if str(resume) != "last" or (checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))):
        return resume
    runs = (read_json(metrics_file, ResumeError).get("runs") or []) if metrics_file.is_file() else []
    if runs and not runs[-1].get("finished"):
        raise ResumeError(f"{metrics_file}: its last run stopped unfinished, but {checkpoints} holds no checkpoint to "
                          "continue it; run without --resume to start the stage over")
    print(f"[{stage}] nothing to resume in {checkpoints}: starting", flush=True)
    return None


def resolve_resume(resume: str | Path | None, checkpoints: Path) -> Path | None:
    """``None`` (start fresh), ``"last"`` (the ``checkpoint-<step>`` in ``checkpoints`` written last) or a checkpoint
    path.

    Written last, not of the highest step, as the trainer's own rotation orders them (``save_total_limit``): a run
    resumed from an earlier checkpoint (``--resume .../checkpoint-40`` after checkpoint-80) that saved checkpoint-75
    has 40 deleted and 80 kept, and the highest step continued the abandoned branch (review 2026-12-07)."""
    from transformers.trainer_utils import sort_checkpoints

    if resume is None or str(resume) == "":
        return None
    if str(resume) == "last":
        written = sort_checkpoints(str(checkpoints), use_mtime=True) if checkpoints.is_dir() else []
        if not written:
            raise ResumeError(f"{checkpoints}: no checkpoint to resume (--resume last); run without --resume to start")
        return Path(written[-1])
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise ResumeError(f"{path / 'trainer_state.json'}: missing: {path} is not a trainer checkpoint")
    return path


def check_resume(checkpoint: Path, identity: dict[str, Any]) -> list[dict[str, Any]]:
    """Refuse a checkpoint that trains something else than ``identity``; return the chain of runs that made it."""
    f = checkpoint / RUN_FILE
    if not f.is_file():
        raise ResumeError(f"{f}: missing: the checkpoint does not say what it trains, so it cannot be resumed safely")
    try:
        saved = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise ResumeError(f"{f}: unreadable ({exc})") from exc
    detail = identity_diff(stored_identity(saved.get("identity")), identity, "checkpoint")
    if detail:
        raise ResumeError(f"{f}: the checkpoint trains something else than this run ({detail}); resume with the same "
                          "base, data and configuration, or start without --resume in a new output folder")
    return list(saved.get("runs", []))


def identity_diff(was: dict[str, Any], now: dict[str, Any], what: str) -> str:
    """How two run identities differ, key by key (``params.<name>`` for a parameter), or "" when they do not."""
    diff = sorted({k for k in set(was) | set(now) if was.get(k) != now.get(k)})
    if "params" in diff:
        p0, p1 = was.get("params") or {}, now.get("params") or {}
        diff.remove("params")
        diff += [f"params.{k}" for k in sorted(set(p0) | set(p1)) if p0.get(k) != p1.get(k)]
    return "; ".join(f"{k}: {what} {_get(was, k)!r}, now {_get(now, k)!r}" for k in diff)


def refuse_changed(metrics_file: Path, identity: dict[str, Any], retrain_on: tuple[str, ...] = ()) -> None:
    """``--resume`` on a stage whose last run finished training something else (other rows, parameters or base, or an
    adapter continued by hand with ``training.sft --init-adapter``): a ``ResumeError`` naming the file and what
    differs. It was trained again from the base without a word, replacing the adapter (review, 2026-12-07; GRPO,
    2026-12-07). Where the identities differ in ``retrain_on`` keys only (GRPO's ``sft_adapter``: SFT trained
    further since), the stage is to be trained again: nothing is raised."""
    if not metrics_file.is_file():
        return
    m = read_json(metrics_file, ResumeError)
    runs = m.get("runs") or []
    was = {k: v for k, v in stored_identity(m.get("identity")).items() if k not in retrain_on}
    now = {k: v for k, v in identity.items() if k not in retrain_on}
    if runs and runs[-1].get("finished") and (detail := identity_diff(was, now, "trained")):
        raise ResumeError(f"{metrics_file}: its adapter was trained on something else than this run ({detail}); "
                          "--resume does not train it again: run without --resume to train it anew, or leave the "
                          "stage out of --stages to keep it")


def require_finished(metrics_file: Path) -> None:
    """Refuse to train on or judge the adapter of a stage whose last run stopped unfinished (its ``max_minutes``):
    the pipeline stops after such a run, but a later stage run by name (``--stages grpo``, ``evaluate``, ...) used
    the half-trained adapter without a word (review, 2026-12-07). No metrics (an adapter put there by hand): no
    check."""
    runs = (read_json(metrics_file, ResumeError).get("runs") or []) if metrics_file.is_file() else []
    if runs and not runs[-1].get("finished"):
        stage = metrics_file.name.removesuffix("_metrics.json")
        raise ResumeError(f"{metrics_file}: its last run stopped unfinished at step {runs[-1].get('to_step')}: "
                          f"continue it first (--stages {stage} --resume last), then run the later stages")


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def chain_text(m: dict) -> str:
    """The chain of runs of a stage's metrics, for the log: empty for a single run."""
    runs = m.get("runs") or []
    if len(runs) < 2:
        return ""
    return "; runs: " + ", ".join(f"{r['from_step']}->{r['to_step']} ({r['seconds']} s"
                                   f"{', from ' + Path(r['resumed_from']).name if r['resumed_from'] else ''})"
                                   for r in runs)


class RunChain:
    """The chain of runs a training reaches its end through: one record per run (what it resumed, steps, seconds,
    checkpoints written), stored in every checkpoint and in the stage's metrics."""

    def __init__(self, earlier: list[dict[str, Any]], resumed_from: Path | None) -> None:
        self.earlier = earlier
        self.checkpoint = resumed_from
        self.started = time.monotonic()
        self.this: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                     "resumed_from": str(resumed_from) if resumed_from else None,
                                     "from_step": None, "to_step": None, "checkpoints": []}

    def runs(self, step: int, *, finished: bool | None = None) -> list[dict[str, Any]]:
        self.this["to_step"] = step
        self.this["seconds"] = round(time.monotonic() - self.started, 1)
        if finished is not None:
            self.this["finished"] = finished
        return [*self.earlier, dict(self.this)]


def checkpoint_callback(every_secs: float, identity: dict[str, Any], chain: RunChain):
    """A ``TrainerCallback`` that asks the trainer for a checkpoint when ``every_secs`` of wall clock have passed
    since the last one (or the start), and writes the run identity and chain into each checkpoint the trainer saves."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class WallClockCheckpoints(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.last = time.monotonic()
            chain.this["from_step"] = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            if every_secs and time.monotonic() - self.last >= every_secs:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last = time.monotonic()
            ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            chain.this["checkpoints"].append(str(ckpt))
            if ckpt.is_dir():
                write_json(ckpt / RUN_FILE, {"identity": identity, "runs": chain.runs(state.global_step)})
            return control

    return WallClockCheckpoints()


def _seeded_length_sampler(trainer_cls):
    """``trainer_cls`` whose ``group_by_length`` sampler draws each epoch's order from (seed, epoch) (the trainer
    calls ``set_epoch``) instead of the global RNG, whose state at an epoch's start a resumed run does not have."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
            super().__init__(batch_size, lengths=lengths)
            self.seed = seed
            self.set_epoch(0)

        def set_epoch(self, epoch: int) -> None:
            self.generator = torch.Generator().manual_seed(self.seed + epoch)

    class Trainer(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, self.args.seed)
            return sampler

    return Trainer


def _time_guard(max_minutes: float):
    from transformers import TrainerCallback

    class TimeGuard(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.monotonic()
            self.stopped_early = False

        def on_step_end(self, args, state, control, **kwargs):
            if max_minutes and time.monotonic() - self.start > max_minutes * 60:
                control.should_training_stop = True
                control.should_save = True
                self.stopped_early = True
            return control

    return TimeGuard()


def _lineage(init_adapter: Path | None) -> dict | None:
    """What a continuation started from: the adapter folder and, for a released one, its manifest's identity."""
    if init_adapter is None:
        return None
    manifest = init_adapter / "manifest.json"
    m = json.loads(manifest.read_text()) if manifest.is_file() else {}
    return {"adapter": str(init_adapter), **{k: m[k] for k in ("name", "version", "adapter_sha256") if k in m}}


def train_sft(base: Path, rows: list[dict], out_dir: Path, p: SFTParams, *, init_adapter: Path | None = None,
              resume: str | Path | None = None, callbacks: Sequence[Any] = ()) -> dict:
    """Train; saves the adapter and tokenizer in ``out_dir/adapter``; returns metrics (loss, steps, seconds, the
    chain of runs). ``resume``: ``"last"`` or a checkpoint folder (see the module doc); ``callbacks``: extra
    ``TrainerCallback``s."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from training.config import bf16_usable

    identity = run_identity("sft", base, rows, p, init_adapter=_lineage(init_adapter))
    chain = start_or_resume(resume, out_dir / "checkpoints", identity)
    checkpoint = chain.checkpoint
    if p.threads:
        torch.set_num_threads(p.threads)
    bf16 = bf16_usable(p.bf16)
    tok = AutoTokenizer.from_pretrained(base)
    # Weights load in bf16 on GPUs (memory); on CPU they stay float32 and bf16 is autocast only, which is what is fast.
    dtype = torch.bfloat16 if bf16 and torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    peft_config = None
    if init_adapter is not None:
        # The adapter's shape (rank, layers, modules) is its own; the dropout is a training choice of this run.
        resumed = LoraConfig.from_pretrained(init_adapter)
        resumed.lora_dropout = p.lora_dropout
        model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True, config=resumed)
    else:
        n_layers = model.config.num_hidden_layers
        peft_config = LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                                 target_modules=list(p.target_modules), task_type="CAUSAL_LM",
                                 layers_to_transform=list(range(p.layers_from, n_layers)) if p.layers_from else None)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"), num_train_epochs=p.epochs, max_steps=p.max_steps,
        per_device_train_batch_size=p.batch_size, gradient_accumulation_steps=p.grad_accum,
        learning_rate=p.learning_rate, lr_scheduler_type=p.lr_scheduler, warmup_steps=p.warmup_ratio,
        max_length=p.max_length, completion_only_loss=True, train_sampling_strategy="group_by_length",
        logging_steps=p.logging_steps, save_steps=p.save_steps, save_total_limit=2, bf16=bf16,
        report_to=[], seed=p.seed, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False, gradient_checkpointing=p.gradient_checkpointing,
    )
    guard = _time_guard(p.max_minutes)
    trainer = _seeded_length_sampler(SFTTrainer)(
        model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config,
        callbacks=[guard, checkpoint_callback(p.checkpoint_every_secs, identity, chain), *callbacks])
    t0 = time.monotonic()
    if checkpoint:
        print(f"[sft] resuming {checkpoint} (run {len(chain.earlier) + 1} of the chain)", flush=True)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.monotonic() - t0
    adapter_dir = out_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    tok.save_pretrained(adapter_dir)
    stamp(adapter_dir, trained_prompt(rows, init_adapter))
    metrics = {"train_loss": result.training_loss, "steps": trainer.state.global_step, "seconds": round(seconds, 1),
               "examples": len(rows), "stopped_early": guard.stopped_early, "params": asdict(p),
               "bf16_used": bf16, "continued_from": _lineage(init_adapter), "resumed_from": chain.this["resumed_from"],
               "runs": chain.runs(trainer.state.global_step, finished=not guard.stopped_early),
               "identity": identity, "log": trainer.state.log_history}
    write_json(out_dir / "sft_metrics.json", metrics)
    # finished: the adapter is the result, the checkpoints only served to get here (removed once the metrics say it
    # finished: removed before, a kill between left a finished adapter that --resume refused, its checkpoints gone)
    if not guard.stopped_early:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    from training.config import load, section
    from training.dataset import read_jsonl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--rows", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--init-adapter", type=Path, help="continue training this adapter (e.g. after a wall-clock stop)")
    ap.add_argument("--max-minutes", type=float, help="override [sft] max_minutes")
    ap.add_argument("--learning-rate", type=float, help="override [sft] learning_rate")
    ap.add_argument("--seed", type=int, help="override [sft] seed (a new data order for a continuation)")
    ap.add_argument("--epochs", type=float, help="override [sft] epochs (size a continuation to its time budget)")
    ap.add_argument("--checkpoint-every-secs", type=float, help="override [sft] checkpoint_every_secs")
    ap.add_argument("--resume", metavar="last|PATH",
                    help="continue from the newest checkpoint in OUT/checkpoints (last) or from this checkpoint")
    a = ap.parse_args(argv)
    p = section(load(a.config), "sft", SFTParams, a.config)
    for key in ("max_minutes", "learning_rate", "seed", "epochs", "checkpoint_every_secs"):
        if getattr(a, key) is not None:
            setattr(p, key, getattr(a, key))
    m = train_sft(a.base, read_jsonl(a.rows), a.out, p, init_adapter=a.init_adapter, resume=a.resume)
    print(json.dumps({k: v for k, v in m.items() if k != "log"}, default=str))


if __name__ == "__main__":
    main()
