"""SFT continuation from the released adapter, on the real base model (two optimizer steps: the first runs at
the warm-up's zero rate)."""

import json
from pathlib import Path

import pytest

from training.prepare_base import BaseModelError, prepare

ROOT = Path(__file__).resolve().parents[2]
RELEASED = ROOT / "models/rationad-smollm2-135m-lora"


def _rows(template_examples, n):
    from training.dataset import sft_rows

    return sft_rows(template_examples[:n])[0]


@pytest.mark.slow
def test_continuation_keeps_the_adapter_shape_takes_this_runs_dropout_and_moves_weights(tmp_path, template_examples):
    from safetensors.torch import load_file

    from training.sft import SFTParams, train_sft

    try:
        base = prepare()
    except BaseModelError as exc:
        pytest.skip(f"no base model: {exc}")
    p = SFTParams(batch_size=2, grad_accum=1, max_steps=2, threads=2, lora_r=4, lora_dropout=0.0,
                  learning_rate=1e-3, logging_steps=1, save_steps=1000, bf16=False)
    m = train_sft(base, _rows(template_examples, 2), tmp_path, p, init_adapter=RELEASED)

    released = json.loads((RELEASED / "manifest.json").read_text())
    assert m["steps"] == 2 and m["continued_from"]["version"] == released["version"]
    saved = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    init = json.loads((RELEASED / "adapter_config.json").read_text())
    # rank and layers are the adapter's own (lora_r=4 above is ignored); the dropout is this run's
    assert saved["r"] == init["r"] and saved["layers_to_transform"] == init["layers_to_transform"]
    assert saved["lora_dropout"] == 0.0 != init["lora_dropout"]
    before = load_file(RELEASED / "adapter_model.safetensors")
    after = load_file(tmp_path / "adapter/adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not before[k].float().allclose(after[k].float()) for k in before)


def test_a_misspelled_table_of_a_training_config_is_refused_naming_the_file(tmp_path):
    """Found by review, failing before its fix: an unknown table ([sfft]) or top-level key was never read, and its
    stage trained on the defaults without a word (unknown keys inside a table were refused already)."""
    from training.config import ConfigError, load

    cfg = tmp_path / "x.toml"
    cfg.write_text("name = 'r'\n[sfft]\nlearning_rate = 1e-5\n")
    with pytest.raises(ConfigError, match=r"x.toml: unknown top-level keys or tables \['sfft'\]"):
        load(cfg)
    for shipped in (ROOT / "training/configs").glob("*.toml"):
        load(shipped)  # every shipped config holds only what is read
