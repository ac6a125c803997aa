"""GRPO alignment (TRL GRPOTrainer) of the SFT adapter with the paper's reward parts (``training.rewards``).

The SFT LoRA adapter keeps training (the policy starts from SFT). ``beta`` defaults to 0: with a peft policy TRL's
reference model is the base with the adapter disabled, i.e. the model *before* SFT, which would pull the policy back
to the untuned base (the paper's KL coefficient, 0.001, is negligible anyway). On CPU, generation uses transformers;
the GPU configuration sets ``use_vllm = true`` (colocated vLLM generation).

Checkpoints and ``--resume`` work as in ``training.sft``: a checkpoint every ``checkpoint_every_secs`` of wall clock
(and at a ``max_minutes`` stop) in ``grpo/checkpoints``, carrying the run identity (which includes the hash of the SFT
adapter it started from) and the chain of runs; TRL's sampler is seeded and regenerates completions after a resume.

    python -m training.pipeline --config training/configs/cpu.toml --stages grpo [--resume last]
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from training.jsonfile import write_json
from training.prompt_stamp import stamp, trained_prompt


@dataclass(slots=True)
class GRPOParams:
    steps: int = 6
    prompts_per_step: int = 2
    generations: int = 4
    max_completion_length: int = 96
    learning_rate: float = 2e-6
    beta: float = 0.0
    temperature: float = 0.9
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    max_minutes: float = 0.0
    threads: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False  # as in SFT: for a 7B base on a GPU; about 2x slower steps on a small model
    rewards: list[str] = field(default_factory=lambda: ["format", "answer", "grounding", "brevity"])
    prompt_pool: int = 64  # training prompts drawn (balanced by label) for the GRPO steps
    checkpoint_every_secs: float = 0.0  # save a resumable checkpoint this often (wall clock); 0 = only at a time stop
    seed: int = 0


def prompt_rows(rows: list[dict], pool: int) -> list[dict]:
    """A label-balanced pool of training prompts with the reward columns (no completion: GRPO samples its own)."""
    keep = ("prompt", "label", "reference", "session", "n_refs", "task")
    anomalous = [r for r in rows if r["label"] == "anomalous"]
    normal = [r for r in rows if r["label"] == "normal"]
    out = []
    for a, n in zip(anomalous, normal):
        out += [a, n]
    return [{k: r[k] for k in keep} for r in out[:pool]]


def epoch_seeded_repeat_sampler():
    """TRL's ``RepeatSampler`` whose order of each epoch is drawn from (seed, epoch) (the trainer calls
    ``set_epoch``): TRL's draws every epoch from one generator seeded when it is built, and a run resumed in epoch
    E >= 1 builds a new one, so it trained on epoch 0's order again (SFT's sampler has the same fix)."""
    import torch
    from trl.trainer.utils import RepeatSampler

    class EpochSeededRepeatSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle:
                self.generator = torch.Generator().manual_seed((self.seed or 0) + epoch)

    return EpochSeededRepeatSampler


def _epoch_seeded(trainer_cls):
    """``trainer_cls`` (GRPOTrainer) with ``epoch_seeded_repeat_sampler`` as its training sampler."""
    from trl.trainer.utils import RepeatSampler

    seeded = epoch_seeded_repeat_sampler()

    class Trainer(trainer_cls):
        def _get_train_sampler(self, dataset=None):
            s = super()._get_train_sampler(dataset)
            if type(s) is not RepeatSampler:
                return s
            out = seeded(s.data_source, s.mini_repeat_count, batch_size=s.batch_size, repeat_count=s.repeat_count,
                         shuffle=s.shuffle, seed=s.seed)
            out.set_epoch(0)
            return out

    return Trainer


def train_grpo(base: Path, sft_adapter: Path, rows: list[dict], out_dir: Path, p: GRPOParams, *,
               resume: str | Path | None = None, callbacks: Sequence[Any] = ()) -> dict:
    """Train the SFT adapter on; saves it in ``out_dir/adapter``. ``resume``: ``"last"`` or a checkpoint folder."""
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from training.config import bf16_usable
    from training.rewards import get
    from training.sft import checkpoint_callback, start_or_resume

    identity = grpo_identity(base, sft_adapter, rows, p)
    chain = start_or_resume(resume, out_dir / "checkpoints", identity)
    if p.threads:
        torch.set_num_threads(p.threads)
    bf16 = bf16_usable(p.bf16)
    tok = AutoTokenizer.from_pretrained(base)
    tok.padding_side = "left"
    # As in SFT: bf16 weights on GPUs; on CPU float32 weights with bf16 autocast (fast on AMX / avx512_bf16).
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.bfloat16 if bf16 and torch.cuda.is_available() else torch.float32)
    model = PeftModel.from_pretrained(model, sft_adapter, is_trainable=True)
    funcs, weights = get(p.rewards)
    args = GRPOConfig(
        output_dir=str(out_dir / "checkpoints"), max_steps=p.steps, learning_rate=p.learning_rate,
        per_device_train_batch_size=p.generations, gradient_accumulation_steps=p.prompts_per_step,
        num_generations=p.generations, max_completion_length=p.max_completion_length, temperature=p.temperature,
        beta=p.beta, reward_weights=weights, remove_unused_columns=False, logging_steps=1,
        save_strategy="steps", save_steps=10**9, save_total_limit=2,  # saves come from the callbacks below
        report_to=[], seed=p.seed, use_vllm=p.use_vllm, vllm_mode=p.vllm_mode, bf16=bf16,
        use_cpu=not torch.cuda.is_available(), log_completions=False, disable_tqdm=False,
        gradient_checkpointing=p.gradient_checkpointing,
    )
    started = time.monotonic()

    class TimeGuard(TrainerCallback):
        stopped = False

        def on_step_end(self, a, state, control, **kw):
            if p.max_minutes and time.monotonic() - started > p.max_minutes * 60:
                control.should_training_stop = True
                control.should_save = True  # resumable from here
                TimeGuard.stopped = True
            return control

    trainer = _epoch_seeded(GRPOTrainer)(model=model, reward_funcs=funcs, args=args,
                                         train_dataset=Dataset.from_list(rows),
                          processing_class=tok,
                          callbacks=[TimeGuard(), checkpoint_callback(p.checkpoint_every_secs, identity, chain),
                                     *callbacks])
    if chain.checkpoint:
        print(f"[grpo] resuming {chain.checkpoint} (run {len(chain.earlier) + 1} of the chain)", flush=True)
    trainer.train(resume_from_checkpoint=str(chain.checkpoint) if chain.checkpoint else None)
    seconds = time.monotonic() - started
    adapter_dir = out_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    tok.padding_side = "right"
    tok.save_pretrained(adapter_dir)
    stamp(adapter_dir, trained_prompt(rows, sft_adapter))
    log = trainer.state.log_history
    metrics = {"steps": trainer.state.global_step, "seconds": round(seconds, 1), "stopped_early": TimeGuard.stopped,
               "reward_by_step": [x.get("reward") for x in log if "reward" in x], "params": asdict(p),
               "resumed_from": chain.this["resumed_from"],
               "runs": chain.runs(trainer.state.global_step, finished=not TimeGuard.stopped), "identity": identity,
               "log": log}
    write_json(out_dir / "grpo_metrics.json", metrics)
    if not TimeGuard.stopped:  # after the metrics say it finished (as SFT)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return metrics


def grpo_identity(base: Path, sft_adapter: Path, rows: list[dict], p: GRPOParams) -> dict[str, Any]:
    from training.sft import file_sha256, run_identity

    # the adapter by its bytes, not its path: the same output folder named another way (an absolute --out) trained
    # a finished GRPO run again, and refused an unfinished one's checkpoint (review 2026-12-07)
    return run_identity("grpo", base, rows, p,
                        sft_adapter={"sha256": file_sha256(sft_adapter / "adapter_model.safetensors")})


def run_stage(cfg: dict, cfg_path: Path, out: Path, base: Path, smoke: bool, *, resume: str | None = None,
              checkpoint_every_secs: float | None = None) -> dict:
    from training.config import section
    from training.dataset import read_jsonl
    from training.sft import chain_text, finished_run, refuse_changed, require_finished, stage_resume

    p = section(cfg, "grpo", GRPOParams, cfg_path)
    if smoke:
        p = replace(p, steps=1, prompts_per_step=1, generations=2, max_completion_length=24, prompt_pool=4)
    if checkpoint_every_secs is not None:
        p.checkpoint_every_secs = checkpoint_every_secs
    require_finished(out / "sft" / "sft_metrics.json")  # never GRPO on a half-trained SFT adapter
    rows = prompt_rows(read_jsonl(out / "data" / "sft_train.jsonl"), p.prompt_pool)
    sft_adapter = out / "sft" / "adapter"
    identity = grpo_identity(base, sft_adapter, rows, p)
    if resume and (done := finished_run(out / "grpo" / "grpo_metrics.json", identity)):
        print(f"[grpo] finished already ({len(done['runs'])} run(s), {done['steps']} steps): not resumed", flush=True)
        return done
    if resume:  # trained again only for an SFT adapter trained further since; other changes are refused
        refuse_changed(out / "grpo" / "grpo_metrics.json", identity, retrain_on=("sft_adapter",))
    resume = stage_resume(resume, out / "grpo" / "checkpoints", out / "grpo" / "grpo_metrics.json", "grpo")
    m = train_grpo(base, sft_adapter, rows, out / "grpo", p, resume=resume)
    print(f"[grpo] {m['steps']} steps in {m['seconds']} s; mean reward by step {m['reward_by_step']}"
          f"{chain_text(m)}", flush=True)
    return m

