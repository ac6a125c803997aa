"""The labelled-neighbour index of a template model (issue 16 item 3), built from the training split only.

Entries are the training split's BGL and Spirit templates with their corrected labels and a one-line reason written
from the knowledge base (``reason``); every template example of every split then carries its ``k`` nearest entries in
its view (``attach``), as the daemon's judge adds them at serving time (``rationad.judge.Judge.view``). A training
template is never shown itself (``exclude_self``): it would learn to copy a label it cannot have for a new template.
After training, ``ship`` puts the index beside the adapter and names it in the adapter's ``manifest.json``, so the
merged model, the evaluation and the release all serve the prompt that was trained.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from rationad.neighbours import INDEX_FILE, Known, NeighbourIndex, NeighbourIndexError

from training.example import Example
from training.jsonfile import read_json, write_json
from training.knowledge import match_rule
from training.splits import unit

TEMPLATE_TASKS = ("bgl", "spirit")


def reason(template: str, label: str) -> str:
    """Why a known template has its label, in the words an operator would use (no refs, no dataset jargon)."""
    rule, _ = match_rule(template)
    kb = rule.verdict if rule is not None else "normal"
    if kb == label:
        return rule.meaning if rule is not None else "a routine status message"
    if label == "anomalous":
        return "came with failures on its system"
    return "routine on its system despite its wording"


def build_index(train: list[Example]) -> NeighbourIndex:
    """The training split's templates, in content-hash order (deterministic, independent of file order)."""
    rows = sorted((ex for ex in train if ex.task in TEMPLATE_TASKS), key=lambda ex: unit(ex.view_key, "index"))
    # the template as the daemon shows it (rationad's {*} masks, not Loghub's <*>): what a served query looks like
    return NeighbourIndex(Known(ex.view.rows[0].template, ex.label, reason(ex.view.rows[0].template, ex.label),
                                ex.task) for ex in rows)


def attach(splits: dict[str, list[Example]], index: NeighbourIndex, k: int) -> None:
    """Give every template example its ``k`` nearest labelled neighbours (training examples never themselves)."""
    for name, examples in splits.items():
        for ex in examples:
            if ex.task in TEMPLATE_TASKS:
                ex.view = replace(ex.view, neighbours=index.neighbours(ex.view.rows[0].template, k,
                                                                       exclude_self=name == "train"))


def trained_k(rows: list[dict]) -> int:
    """How many labelled neighbours the prompts of training rows carry (the most any row's user message shows; 0
    without): what the adapter learned to read, whatever the config says today."""
    from rationad.prompt import view_from_message

    return max((len(view_from_message(m.get("content", "")).neighbours) for r in rows for m in r["prompt"]
                if m.get("role") == "user"), default=0)


def ship(index_file: Path, k: int, folder: Path) -> dict:
    """Copy the index into a model folder and name it in the folder's ``manifest.json`` (created if absent)."""
    if not index_file.is_file():
        raise NeighbourIndexError(f"neighbour index {index_file}: missing (rerun the data stage)")
    index = NeighbourIndex.load(index_file)
    spec = index.save(folder / INDEX_FILE) | {"k": k}
    manifest_path = folder / "manifest.json"
    manifest = read_json(manifest_path, NeighbourIndexError) if manifest_path.is_file() else {}
    manifest["neighbours"] = spec
    write_json(manifest_path, manifest)
    return spec


def unship(folder: Path) -> bool:
    """Take a neighbour index out of a model folder (its file and its manifest entry): a run trained without
    neighbours into a folder an earlier run shipped one to kept it, and evaluation, the gate, the daemon and export
    served neighbour prompts the adapter never saw. Whether there was one."""
    manifest_path = folder / "manifest.json"
    manifest = read_json(manifest_path, NeighbourIndexError) if manifest_path.is_file() else {}
    had = manifest.pop("neighbours", None) is not None or (folder / INDEX_FILE).is_file()
    if manifest_path.is_file():
        write_json(manifest_path, manifest)
    (folder / INDEX_FILE).unlink(missing_ok=True)
    return had


def copy_shipped(src: Path, dest: Path) -> None:
    """Copy a shipped index from one model folder to another (merge, export)."""
    if (src / INDEX_FILE).is_file():
        shutil.copy2(src / INDEX_FILE, dest / INDEX_FILE)
