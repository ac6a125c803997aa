"""Which prompt an adapter was trained on, written into its folder's ``manifest.json`` (``prompt_version``).

The daemon serves a model the prompt its manifest names (``rationad.judge``): the base prompt, plus each trained
addition after ``+`` (``rationad-prompt-v1+unfinished``: an unfinished session's prompt says so,
``rationad.prompt.UNFINISHED_NOTE``; ``+walk``: HDFS rationales start with ``rationad.facts``'s walk and tally, and
``+rule``: template analyses with their rule sentence, which the daemon then writes for the model to continue). The
version is read from what the adapter learned, not from a config: the rows it was trained on, and the adapter it
continued (a continuation keeps what its start was trained with). A row counts as trained with the walk or the rule
sentence when its analysis starts with what the daemon's own functions write for its prompt (``rationad.facts``), so
a change to those sentences changes the rows and the check alike.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from rationad.facts import evidence, rule_evidence
from rationad.prompt import (PROMPT_RULE, PROMPT_UNFINISHED, PROMPT_VERSION, PROMPT_WALK, UNFINISHED_NOTE, SessionView,
                             trained_with, view_from_message)

from training.jsonfile import read_json, write_json

TEMPLATE_TASKS = ("bgl", "spirit", "generic_template", "operator")


def manifest_prompt(folder: Path | None) -> str | None:
    """The ``prompt_version`` of ``folder``'s manifest, or None (no folder, no manifest, or none named)."""
    path = None if folder is None else Path(folder) / "manifest.json"
    if path is None or not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("prompt_version")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path}: not a JSON object ({e})") from None
    return str(value) if value else None


def says_unfinished(row: dict) -> bool:
    """Whether a training row's prompt carries ``UNFINISHED_NOTE`` (as its own line, where ``user_message`` puts it)."""
    return any(m.get("role") == "user" and f"\n{UNFINISHED_NOTE}\n" in m.get("content", "") for m in row["prompt"])


def _view(row: dict) -> SessionView:
    return view_from_message(next((m.get("content", "") for m in row["prompt"] if m.get("role") == "user"), ""))


def _starts_with(row: dict, start: str | None) -> bool:
    return start is not None and any(m.get("role") == "assistant" and m.get("content", "").startswith(start)
                                     for m in row.get("completion") or ())


def writes_walk(row: dict) -> bool:
    """Whether a training row's target analysis starts with the HDFS walk and tally the daemon writes for its prompt
    (``rationad.facts.evidence``). A row whose prompt masks text addressed to the model does not count (the prompt
    alone does not say which rows the walk calls ignored); the other rows of a training set do."""
    return row.get("task") == "hdfs" and _starts_with(row, evidence(_view(row)))


def writes_rule(row: dict) -> bool:
    """Whether a training row's target analysis of a template starts with the rule sentence the daemon writes for its
    prompt (``rationad.facts.rule_evidence``, without the neighbours: the prompt's rows alone)."""
    return row.get("task") in TEMPLATE_TASKS and _starts_with(row, rule_evidence(replace(_view(row), templated=True)))


def trained_prompt(rows: list[dict], start: Path | None = None) -> str:
    """The prompt version of an adapter trained on ``rows``, continuing ``start`` (an adapter folder) if given."""
    earlier = manifest_prompt(start) or PROMPT_VERSION
    unfinished = trained_with(earlier, PROMPT_UNFINISHED) or any(says_unfinished(r) for r in rows)
    walk = trained_with(earlier, PROMPT_WALK) or any(writes_walk(r) for r in rows)
    rule = trained_with(earlier, PROMPT_RULE) or any(writes_rule(r) for r in rows)
    return PROMPT_VERSION + "".join(f"+{name}" for name, trained in
                                    ((PROMPT_UNFINISHED, unfinished), (PROMPT_WALK, walk), (PROMPT_RULE, rule))
                                    if trained)


def stamp(adapter: Path, prompt_version: str) -> None:
    """Name ``prompt_version`` in ``adapter``'s manifest (created if absent; other entries kept)."""
    path = Path(adapter) / "manifest.json"
    manifest = read_json(path) if path.is_file() else {}
    manifest["prompt_version"] = prompt_version
    write_json(path, manifest)
