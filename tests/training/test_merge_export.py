"""Merge and export: clear errors on missing files, cache keyed by the adapter's content."""

import json

import pytest

from training.merge_adapter import MergeError, merged_folder, merged_key


def test_missing_base_or_adapter_names_the_file(tmp_path):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir()
    adapter.mkdir()
    with pytest.raises(MergeError, match=r"base.config\.json"):
        merged_folder(base, adapter, cache=tmp_path / "c")
    (base / "config.json").write_text("{}")
    with pytest.raises(MergeError, match=r"adapter_config\.json"):
        merged_folder(base, adapter, cache=tmp_path / "c")


def test_key_changes_with_adapter_content(tmp_path):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir()
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"a")
    k1 = merged_key(base, adapter)
    assert k1 == merged_key(base, adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"b")
    assert merged_key(base, adapter) != k1


def test_cached_folder_is_a_no_op(tmp_path):
    base, adapter, cache = tmp_path / "base", tmp_path / "adapter", tmp_path / "c"
    base.mkdir()
    adapter.mkdir()
    (base / "config.json").write_text("{}")
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    done = cache / f"merged-{merged_key(base, adapter)}"
    done.mkdir(parents=True)
    for name in (".complete", "config.json", "model.safetensors"):  # (its marker alone is no finished folder)
        (done / name).write_text("ok")
    assert merged_folder(base, adapter, cache=cache) == done  # no model is loaded


def test_export_writes_bf16_weights_portable_config_and_manifest(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from training.export import export

    src = tmp_path / "adapter"
    src.mkdir()
    save_file({"w": torch.ones(2, 3)}, str(src / "adapter_model.safetensors"))
    (src / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "/root/x/base-123"}))
    dest = export(src, tmp_path / "out", {"name": "n", "prompt_version": "p"})
    assert load_file(str(dest / "adapter_model.safetensors"))["w"].dtype == torch.bfloat16
    assert json.loads((dest / "adapter_config.json").read_text())["base_model_name_or_path"] == "base-123"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["name"] == "n" and len(manifest["adapter_sha256"]) == 16


def test_export_over_the_size_limit_fails_and_leaves_the_release_unchanged(tmp_path):
    import torch
    from safetensors.torch import save_file

    from training.export import export
    from training.gate import GateError

    src, dest = tmp_path / "adapter", tmp_path / "out"
    src.mkdir()
    save_file({"w": torch.ones(100, 100)}, str(src / "adapter_model.safetensors"))  # 20,000 bytes in bf16
    (src / "adapter_config.json").write_text(json.dumps({"r": 8}))
    export(src, dest, {"name": "n"}, max_bytes=30_000)
    before = (dest / "adapter_model.safetensors").read_bytes()
    assert json.loads((dest / "manifest.json").read_text())["adapter_bytes"] == len(before)
    save_file({"w": torch.ones(200, 100)}, str(src / "adapter_model.safetensors"))  # 40,000 bytes: over
    with pytest.raises(GateError, match=r"adapter_model\.safetensors.*over the limit of 30,000 bytes"):
        export(src, dest, {"name": "n"}, max_bytes=30_000)
    assert (dest / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                      "manifest.json"]


def test_a_folder_another_setup_finished_meanwhile_stands(tmp_path):
    """Found by review (2026-12-07): two setups sharing the cache each built the base model in one ``.tmp`` folder
    and removed the other's half-written one (a folder without weights then passed for complete), and a merge
    finishing second failed renaming onto the first one's folder. Each builds in a folder of its own; the first
    complete folder stands; a base folder without weights is not complete."""
    from training.prepare_base import is_complete, publish

    def made(folder, weights=True):
        folder.mkdir()
        for name in (".complete", "config.json") + (("model.safetensors",) if weights else ()):
            (folder / name).write_text("x")
        return folder

    out = tmp_path / "base"
    assert not is_complete(made(tmp_path / "no-weights", weights=False))
    publish(made(tmp_path / "a.tmp1"), out)
    assert is_complete(out) and not (tmp_path / "a.tmp1").exists()
    theirs = made(tmp_path / "b.tmp2")
    publish(theirs, out)  # finished second: the first stands, the caller removes its own
    assert is_complete(out) and theirs.exists()


def test_build_folders_of_processes_that_no_longer_run_are_removed(tmp_path):
    """Found by the review of the per-process build folders: one killed mid-build (SIGTERM, the OOM killer) was never
    removed, about 0.5 GB each time. The next build removes those whose process no longer runs, and no other."""
    import os
    import subprocess
    import time

    from training.prepare_base import clear_stale

    out = tmp_path / "merged-abc"
    gone = subprocess.Popen(["true"])  # a process that ran and ended: its pid runs nothing now
    gone.wait()
    old = time.time() - 2 * 3600
    names = {f"merged-abc.tmp{gone.pid}": old, "merged-abc.tmp99999999": time.time(),  # (another host's, building)
             "merged-abc.tmp": old, "merged-abc.tmp.bak": old, f"merged-abc.tmp{os.getpid()}": old,
             "merged-abcd.tmp1": old}
    for name, when in names.items():
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (when, when))
    clear_stale(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names) - {f"merged-abc.tmp{gone.pid}"})
