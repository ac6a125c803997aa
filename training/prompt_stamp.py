"""Which prompt an adapter was trained on, written into its folder's ``manifest.json`` (``prompt_version``).

The daemon serves a model the prompt its manifest names (``rationad.judge``): the base prompt, plus each trained
addition after ``+`` (``rationad-prompt-v1+unfinished``: an unfinished session's prompt says so,
``rationad.prompt.UNFINISHED_NOTE``; ``+walk``: HDFS rationales start with ``rationad.facts``'s walk and tally, and
``+rule``: template analyses with their rule sentence, which the daemon then writes for the model to continue). The
version is read from what the adapter learned, not from a config: the rows it was trained on, and the adapter it
continued (a continuation keeps what its start was trained with).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rationad.prompt import PROMPT_RULE, PROMPT_UNFINISHED, PROMPT_VERSION, PROMPT_WALK, UNFINISHED_NOTE, trained_with

# A walk entry, then the tally in ``rationad.facts.tally``'s one form, at the start of an analysis.
_WALK_START = re.compile(r"<think>L\d+ x\d+ [^<>]*?\. Starts \d+, received \d+, acknowledged \d+, registered \d+; "
                         r"error lines \d+\.")
# ``rationad.template_rules.rule_sentence`` at the start of a template analysis.
_RULE_START = re.compile(r"<think>L\d+ (contains '|has no severity word or failure class: a routine status message\.)")
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


def writes_walk(row: dict) -> bool:
    """Whether a training row's target analysis starts with an HDFS walk and tally in ``rationad.facts``'s form."""
    return row.get("task") == "hdfs" and any(
        m.get("role") == "assistant" and _WALK_START.match(m.get("content", "")) for m in row.get("completion") or ())


def writes_rule(row: dict) -> bool:
    """Whether a training row's target analysis of a template starts with its rule sentence."""
    return row.get("task") in TEMPLATE_TASKS and any(
        m.get("role") == "assistant" and _RULE_START.match(m.get("content", "")) for m in row.get("completion") or ())


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
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest["prompt_version"] = prompt_version
    path.write_text(json.dumps(manifest, indent=1) + "\n")
