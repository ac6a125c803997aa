"""A stage metrics file, an adapter manifest or a rows file cut mid-write (a full disk, a session killed while
writing) is reported naming the file, in the reading module's own error type; manifests are written atomically, so a
write cut short leaves the previous file (review, 2026-12-07: each gave a bare JSONDecodeError naming no file)."""

from __future__ import annotations

import errno
import json
import pathlib
from pathlib import Path

import pytest

from rationad.neighbours import INDEX_FILE, Known, NeighbourIndex, NeighbourIndexError


def _cut(path: Path, value: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(value, indent=1)
    path.write_text(text[: len(text) // 2])
    return path


def _index(folder: Path) -> Path:
    NeighbourIndex([Known("node {*} link error", "anomalous", "a link failed", "bgl")]).save(folder / INDEX_FILE)
    return folder / INDEX_FILE


def _readers():
    from training import export, gate, neighbour_index, prompt_stamp, sft

    metrics = {"runs": [{"finished": True}], "steps": 2, "identity": {"stage": "grpo"}}
    return {
        "finished_run": ("grpo/grpo_metrics.json", metrics, sft.ResumeError,
                         lambda f: sft.finished_run(f, {"stage": "grpo"})),
        "stage_resume": ("grpo/grpo_metrics.json", metrics, sft.ResumeError,
                         lambda f: sft.stage_resume("last", f.parent / "checkpoints", f, "grpo")),
        "refuse_changed": ("sft/sft_metrics.json", metrics, sft.ResumeError,
                           lambda f: sft.refuse_changed(f, {"stage": "sft"})),
        "ship": ("adapter/manifest.json", {"prompt_version": "v"}, NeighbourIndexError,
                 lambda f: neighbour_index.ship(_index(f.parent.parent), 1, f.parent)),
        "unship": ("adapter/manifest.json", {"neighbours": {"k": 1}}, NeighbourIndexError,
                   lambda f: neighbour_index.unship(f.parent)),
        "stamp": ("adapter/manifest.json", {"neighbours": {"k": 1}}, ValueError,
                  lambda f: prompt_stamp.stamp(f.parent, "v")),
        "export": ("adapter/manifest.json", {"neighbours": {"k": 1}}, ValueError,
                   lambda f: export._shipped_neighbours(f.parent)),
        "choice": ("eval/choice.json", {"released": "sft"}, gate.GateError,
                   lambda f: gate.candidate_identity(f.parent.parent)),
        "gate": ("eval/gate.json", {"passed": True}, gate.GateError,
                 lambda f: gate.check_export(f.parent.parent, smoke=False, force=False)),
        "shrink": ("adapter/shrink.json", {"rank": 8}, ValueError,
                   lambda f: export.released_cut(f.parent.parent.parent, f.parent.parent.name, None)),
    }


@pytest.mark.parametrize("reader", ["finished_run", "stage_resume", "refuse_changed", "ship", "unship", "stamp",
                                    "export", "choice", "gate", "shrink"])
def test_a_cut_json_file_is_reported_naming_it(tmp_path, reader):
    name, value, error, read = _readers()[reader]
    f = _cut(tmp_path / name, value)
    with pytest.raises(error, match=rf"{f}: not readable as JSON"):
        read(f)


def test_a_rows_line_that_is_not_json_names_the_file_and_line(tmp_path):
    from training.dataset import read_jsonl

    f = tmp_path / "sft_train.jsonl"
    f.write_text('{"a": 1}\n\n{"a": 2}\n{"a": ')
    with pytest.raises(ValueError, match=rf"{f}, line 4: not JSON"):
        read_jsonl(f)
    f.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(f) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("writer", ["stamp", "ship"])
def test_a_manifest_write_cut_short_leaves_the_previous_manifest(tmp_path, monkeypatch, writer):
    """The disk fills while the manifest is written: the write fails, and the previous manifest still reads whole
    (written in place, it was left cut)."""
    from training.neighbour_index import ship
    from training.prompt_stamp import manifest_prompt, stamp

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    stamp(adapter, "rationad-prompt-v1")
    before = (adapter / "manifest.json").read_text()
    index = _index(tmp_path)
    real_open = pathlib.Path.open

    class DiskFull:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    def open_(self, mode="r", *a, **k):
        f = real_open(self, mode, *a, **k)
        return DiskFull(f) if "w" in mode and "manifest.json" in self.name else f

    monkeypatch.setattr(pathlib.Path, "open", open_)
    with pytest.raises(OSError, match="No space left"):
        stamp(adapter, "rationad-prompt-v1+walk") if writer == "stamp" else ship(index, 1, adapter)
    monkeypatch.undo()
    assert (adapter / "manifest.json").read_text() == before and manifest_prompt(adapter) == "rationad-prompt-v1"
    assert sorted(p.name for p in adapter.iterdir()) in (["manifest.json"], ["manifest.json", INDEX_FILE])


def test_a_cut_cached_score_file_is_judged_again(tmp_path):
    from training import gate

    f = _cut(tmp_path / "k.json", {"sets": {}})
    assert gate.cached_scores(tmp_path, "k", lambda: {"sets": {"hdfs": 1}}) == {"sets": {"hdfs": 1}}
    assert json.loads(f.read_text()) == {"sets": {"hdfs": 1}}
