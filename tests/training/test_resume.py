"""Resumable training (issue 16, item 4): a run interrupted after a wall-clock checkpoint and resumed with
``resume="last"`` ends where an uninterrupted run ends (same LoRA weights, losses, steps), and a checkpoint of other
data or a fresh start over an unfinished run is refused naming the file.

The model is built in-process from a config (2 layers, hidden 32) with the real base's tokenizer, so each run takes
seconds; the data are real SFT rows (BGL templates)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from training.prepare_base import BaseModelError, prepare


class Crash(RuntimeError):
    pass


def _crash_after_save(at_step: int):
    """A callback that kills the run right after the checkpoint of ``at_step`` is written (as a lost session would)."""
    from transformers import TrainerCallback

    class CrashAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == at_step:
                raise Crash(f"killed after checkpoint-{at_step}")

    return CrashAfterSave()


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    try:
        real = prepare()
    except BaseModelError as exc:
        pytest.skip(f"no base model (for its tokenizer): {exc}")
    tok = AutoTokenizer.from_pretrained(real)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=2048, tie_word_embeddings=True,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id))
    out = tmp_path_factory.mktemp("tiny-base")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def rows(template_examples):
    from training.dataset import sft_rows

    return sft_rows(template_examples[:8])[0]


def _losses(metrics: dict) -> list[tuple[int, float]]:
    return [(x["step"], x["loss"]) for x in metrics["log"] if "loss" in x]


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert wa[k].allclose(wb[k], rtol=1e-5, atol=1e-7), k


@pytest.mark.slow
def test_sft_resumed_after_a_crash_ends_like_an_uninterrupted_run(tmp_path, tiny_base, rows):
    from training.sft import RUN_FILE, ResumeError, SFTParams, train_sft

    # 8 rows, batches of 2, 2 epochs: 8 steps; the crash at step 5 is inside the second epoch, so the resumed run
    # must redraw that epoch's order and skip the batch already trained. Dropout > 0: the RNG state must resume too.
    p = SFTParams(batch_size=2, grad_accum=1, epochs=2, lora_r=4, lora_alpha=8, lora_dropout=0.1, learning_rate=5e-3,
                  lr_scheduler="cosine", threads=2, bf16=False, logging_steps=1, save_steps=1000,
                  checkpoint_every_secs=1e-9)  # every step: the interval has always passed
    whole = train_sft(tiny_base, rows, tmp_path / "whole", p)
    assert whole["steps"] == 8 and len(whole["runs"]) == 1 and whole["runs"][0]["finished"]
    assert not (tmp_path / "whole/checkpoints").exists()  # a finished run drops its checkpoints

    out = tmp_path / "split"
    with pytest.raises(Crash):
        train_sft(tiny_base, rows, out, p, callbacks=[_crash_after_save(5)])
    ckpt = out / "checkpoints/checkpoint-5"
    for f in ("optimizer.pt", "scheduler.pt", "trainer_state.json", "adapter_model.safetensors", RUN_FILE):
        assert (ckpt / f).is_file(), f
    assert json.loads((ckpt / RUN_FILE).read_text())["runs"][0]["to_step"] == 5

    # what must not happen silently: a fresh start over the unfinished run, a resume on other data
    with pytest.raises(ResumeError, match="unfinished run"):
        train_sft(tiny_base, rows, out, p)
    with pytest.raises(ResumeError, match=rf"{RUN_FILE}.*data_sha256"):
        train_sft(tiny_base, rows[:-1], out, p, resume="last")
    with pytest.raises(ResumeError, match=r"params\.learning_rate"):
        train_sft(tiny_base, rows, out, replace(p, learning_rate=1e-3), resume="last")
    with pytest.raises(ResumeError, match="no checkpoint"):
        train_sft(tiny_base, rows, tmp_path / "empty", p, resume="last")

    resumed = train_sft(tiny_base, rows, out, replace(p, max_minutes=30), resume="last")  # run-local keys may change
    assert resumed["steps"] == whole["steps"]
    assert [r["resumed_from"] for r in resumed["runs"]] == [None, str(ckpt)]
    assert [(r["from_step"], r["to_step"]) for r in resumed["runs"]] == [(0, 5), (5, 8)]
    assert resumed["resumed_from"] == str(ckpt)
    a, b = _losses(whole), _losses(resumed)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 9))
    assert [x for _, x in a] == pytest.approx([x for _, x in b], rel=1e-5)
    _assert_same_weights(tmp_path / "whole/adapter", out / "adapter")


@pytest.mark.slow
def test_grpo_resumed_after_a_crash_ends_like_an_uninterrupted_run(tmp_path, tiny_base, rows, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training import rewards
    from training.grpo import GRPOParams, prompt_rows, train_grpo
    from training.sft import ResumeError

    # The paper's rewards give an untrained 2-layer model the same score for every sample (nothing parses), so no
    # advantage and no update; a reward that varies with the sampled text makes the policy move.
    monkeypatch.setitem(rewards.REGISTRY, "text_length", (lambda prompts, completions, **_: [
        float(len(rewards._text(c))) / 10 for c in completions], 1.0))

    sft = tmp_path / "sft"  # a fresh LoRA adapter stands in for the SFT result
    torch.manual_seed(0)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base),
                   LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                              init_lora_weights="gaussian")).save_pretrained(sft / "adapter")
    # Three prompts, six steps: two epochs, and the crash in the second (a resumed run in epoch 1 trained on epoch 0's
    # order again before TRL's sampler was seeded by epoch: found by review).
    prompts = prompt_rows(rows, 3)
    p = GRPOParams(steps=6, prompts_per_step=1, generations=2, max_completion_length=8, learning_rate=1e-2,
                   threads=2, bf16=False, rewards=["text_length"], checkpoint_every_secs=1e-9)
    whole = train_grpo(tiny_base, sft / "adapter", prompts, tmp_path / "whole", p)
    out = tmp_path / "split"
    with pytest.raises(Crash):
        train_grpo(tiny_base, sft / "adapter", prompts, out, p, callbacks=[_crash_after_save(4)])
    assert (out / "checkpoints/checkpoint-4/optimizer.pt").is_file()
    with pytest.raises(ResumeError, match="data_sha256"):
        train_grpo(tiny_base, sft / "adapter", prompts[:2], out, p, resume="last")
    resumed = train_grpo(tiny_base, sft / "adapter", prompts, out, p, resume="last")
    assert resumed["steps"] == whole["steps"] == 6
    assert [(r["from_step"], r["to_step"]) for r in resumed["runs"]] == [(0, 4), (4, 6)]
    assert resumed["reward_by_step"] == pytest.approx(whole["reward_by_step"], rel=1e-5)
    start, end = _weights(sft / "adapter"), _weights(tmp_path / "whole/adapter")
    assert any(not start[k].allclose(end[k]) for k in start)  # the policy moved: the comparison is not trivial
    _assert_same_weights(tmp_path / "whole/adapter", out / "adapter")


def test_a_checkpoint_of_other_base_weights_under_the_same_name_is_refused(tmp_path):
    """Found by review (2026-12-06), failing before its fix: the base was named by its folder name and config.json
    only, which two models of one architecture share (and ~/.cache/rationad/models/base is a symlink that setup
    repoints): a checkpoint trained on one base resumed silently on another."""
    from training.sft import RUN_FILE, ResumeError, SFTParams, check_resume, run_identity

    bases = []
    for name, weights in (("a", b"weights of one model"), ("b", b"weights of another")):
        base = tmp_path / name / "base"
        base.mkdir(parents=True)
        (base / "config.json").write_text('{"model_type": "llama"}')
        (base / "model.safetensors").write_bytes(weights)
        bases.append(base)
    rows = [{"prompt": [], "completion": []}]
    one, other = (run_identity("sft", b, rows, SFTParams()) for b in bases)
    ckpt = tmp_path / "checkpoint-5"
    ckpt.mkdir()
    (ckpt / RUN_FILE).write_text(json.dumps({"identity": one, "runs": []}))
    assert check_resume(ckpt, one) == []
    with pytest.raises(ResumeError, match=rf"{RUN_FILE}.*base"):
        check_resume(ckpt, other)


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "consolidated.pth"])
def test_two_bases_stored_in_another_weight_format_have_two_identities(tmp_path, weights):
    """Found by review (2026-12-07), failing before its fix: only ``*.safetensors`` were hashed, so every base stored
    as ``pytorch_model.bin`` had the digest of nothing and another base's checkpoint was resumed."""
    from training.sft import weights_sha256

    digests = []
    for name, content in (("a", b"weights of one model"), ("b", b"weights of another")):
        base = tmp_path / name
        base.mkdir()
        (base / weights).write_bytes(content)
        digests.append(weights_sha256(base))
    assert digests[0] != digests[1]
    (tmp_path / "b" / "pytorch_model.bin.index.json").write_text('{"weight_map": {}}')  # a sharded base's index
    assert weights_sha256(tmp_path / "b") != digests[1]


def test_a_base_folder_without_weights_is_refused_naming_it(tmp_path):
    """Found with the review above, failing before its fix: a folder with no weight file had an identity (the digest
    of nothing) that every such folder shared."""
    from training.sft import SFTParams, run_identity

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(BaseModelError, match=rf"{base}: no weight file"):
        run_identity("sft", base, [], SFTParams())


def test_resume_last_starts_a_stage_with_nothing_to_resume_and_refuses_one_whose_checkpoints_are_gone(tmp_path):
    """Found by review (2026-12-06), failing before its fix: the documented next-session command (--resume last for
    sft,grpo,...) failed at GRPO whenever GRPO had no checkpoint (it had not run, or had finished on an SFT adapter
    trained further since): "no checkpoint to resume"."""
    from training.sft import ResumeError, stage_resume

    ckpts, metrics = tmp_path / "checkpoints", tmp_path / "grpo_metrics.json"
    assert stage_resume("last", ckpts, metrics, "grpo") is None  # never ran
    metrics.write_text(json.dumps({"runs": [{"finished": True}]}))
    assert stage_resume("last", ckpts, metrics, "grpo") is None  # finished (on what may have changed since)
    (ckpts / "checkpoint-4").mkdir(parents=True)
    assert stage_resume("last", ckpts, metrics, "grpo") == "last"
    assert stage_resume(None, ckpts, metrics, "grpo") is None and stage_resume(ckpts / "x", ckpts, metrics, "g") == \
        ckpts / "x"
    (ckpts / "checkpoint-4").rmdir()
    metrics.write_text(json.dumps({"runs": [{"finished": True}, {"finished": False}]}))
    with pytest.raises(ResumeError, match="grpo_metrics.json: its last run stopped unfinished"):
        stage_resume("last", ckpts, metrics, "grpo")


def test_the_pipeline_stops_after_a_stage_that_stopped_unfinished(capsys):
    """Found with the review above: a stage stopped at its max_minutes let the pipeline go on, training GRPO on (or
    evaluating) an unfinished adapter."""
    from training.pipeline import _finished

    assert _finished({"runs": [{"finished": True}], "steps": 9}, "sft")
    assert not _finished({"runs": [{"finished": False}], "steps": 4}, "sft")
    assert "--resume last" in capsys.readouterr().out


def test_grpo_s_sampler_draws_each_epoch_s_order_from_its_epoch():
    """Found by review, failing before its fix: TRL's RepeatSampler draws every epoch from one generator seeded when
    it is built, and a run resumed in epoch 1 builds a new one: it trained on epoch 0's order again (transformers
    skips batches within the epoch and calls set_epoch, which RepeatSampler did not have)."""
    from training.grpo import epoch_seeded_repeat_sampler

    def sampler():
        return epoch_seeded_repeat_sampler()(list(range(8)), mini_repeat_count=2, batch_size=2, repeat_count=2,
                                             seed=0)

    whole = sampler()
    epochs = []
    for epoch in range(3):
        whole.set_epoch(epoch)
        epochs.append(list(whole))
    assert epochs[0] != epochs[1] != epochs[2]
    for epoch in (1, 2):
        resumed = sampler()
        resumed.set_epoch(epoch)
        assert list(resumed) == epochs[epoch]


@pytest.mark.parametrize("case", ["data changed", "continued by hand"])
def test_resume_last_refuses_a_finished_sft_that_trained_something_else(tmp_path, monkeypatch, case):
    """Found by review (2026-12-07), failing before its fix: ``--resume last`` on an SFT stage whose last run finished
    on other rows (one row more), or on an adapter continued by hand (``training.sft --init-adapter``, as
    cpu_continue.toml says), trained SFT again from the base without a word, replacing the adapter."""
    import training.pipeline as pl
    import training.sft as sft
    from training.config import load, section

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llama"}')
    (base / "model.safetensors").write_bytes(b"w")
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "sft" / "adapter").mkdir(parents=True)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'name = "x"\nversion = "0.1"\nout = "{out}"\n[base]\npath = "{base}"\n[sft]\nlora_r = 8\n')
    p = section(load(cfg), "sft", sft.SFTParams, cfg)
    rows = [{"prompt": [{"role": "user", "content": f"row {i}"}], "completion": []} for i in range(5)]
    trained = rows if case == "continued by hand" else rows[:4]
    starts = {"init_adapter": {"version": "0.3.1"}} if case == "continued by hand" else {"init_adapter": None}
    (out / "data" / "sft_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "sft" / "sft_metrics.json").write_text(json.dumps(
        {"runs": [{"finished": True}], "steps": 9, "identity": sft.run_identity("sft", base, trained, p, **starts)}))
    calls = []
    monkeypatch.setattr(sft, "train_sft", lambda *a, **k: calls.append(k) or {"runs": [{"finished": True}]})
    monkeypatch.setattr(pl, "ship_neighbours", lambda *a, **k: None)
    with pytest.raises(sft.ResumeError, match="sft_metrics.json: its adapter was trained on something else than this "
                                              "run \\((data_sha256|init_adapter)"):
        pl.main(["--config", str(cfg), "--stages", "sft", "--resume", "last"])
    assert calls == []
    (out / "sft" / "sft_metrics.json").write_text(json.dumps(  # the same run finished: skipped, as before
        {"runs": [{"finished": True}], "steps": 9, "identity": sft.run_identity("sft", base, rows, p,
                                                                                 init_adapter=None)}))
    pl.main(["--config", str(cfg), "--stages", "sft", "--resume", "last"])
    assert calls == []


def test_resume_last_continues_the_checkpoint_written_last_not_an_abandoned_later_step(tmp_path):
    """Found by review (2026-12-07), failing before its fix: a run resumed from checkpoint-40 (after checkpoint-80)
    that saved checkpoint-75 has 40 deleted and 80 kept by the trainer's rotation (by time written); ``--resume
    last`` took the highest step, 80, and continued the abandoned branch."""
    import os

    from training.sft import resolve_resume

    for step, written in ((80, 1_000_000.0), (75, 2_000_000.0)):
        c = tmp_path / f"checkpoint-{step}"
        c.mkdir()
        (c / "trainer_state.json").write_text("{}")
        os.utime(c, (written, written))
    assert resolve_resume("last", tmp_path) == tmp_path / "checkpoint-75"
