"""The template rules an evaluation judges with: the served rules cut to the words training-split templates evidence.

The served rules (``rationad/data/template_rules.json``) hold words read off the experts' label corrections, which
cover every split: nine of them match validation or test templates only (``training.leakage``). A model's template
verdicts follow the rule sentence the daemon writes (``rationad.facts.rule_evidence``; 0.3.2 on BGL test templates:
0.651 with the nine, 0.550 without), and the knowledge-base baseline is those rules, so judged with them validation
and test would score words chosen by looking at their answers. The evaluate and gate stages judge inside
``held_out``: the rules cut to the alternatives some training template matches (or that match no template at all),
read by the daemon's own reader. The daemon serves the full rules.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rationad.templates import from_loghub


def template_texts(splits: dict) -> dict[str, list]:
    return {s: [(e, from_loghub(e.extra["template"])) for e in ex if e.task in ("bgl", "spirit")]
            for s, ex in splits.items()}


def train_rules(splits: dict) -> tuple[dict, list[str]]:
    """(the served rules file cut to the alternatives some training-split BGL/Spirit template evidences, or that
    match no template of any split; the alternatives dropped: those matching validation or test templates only)."""
    import rationad.template_rules as tr

    data = json.loads(tr.RULES_FILE.read_text(encoding="utf-8"))
    texts = template_texts(splits)
    rules, dropped = [], []
    for r in data["rules"]:
        keep = []
        for a in r["pattern"].split("|"):  # the rules' patterns are plain alternatives (no nested groups)
            rx = re.compile(a, re.I)
            in_train = any(rx.search(t) for _, t in texts.get("train", ()))
            elsewhere = any(rx.search(t) for s in ("val", "test") for _, t in texts.get(s, ()))
            (dropped if elsewhere and not in_train else keep).append(a)
        if keep:
            rules.append({**r, "pattern": "|".join(keep)})
    return {**data, "rules": rules}, dropped


@contextmanager
def rules_from(path: Path) -> Iterator[None]:
    """The daemon's template rules (prompts' rule sentences, the faithfulness checks, the knowledge-base baseline)
    read from ``path`` for the duration: ``rationad.template_rules.RULES_FILE`` swapped, its caches cleared both
    ways. The file is read (and a malformed one refused, naming it) on entry."""
    import rationad.template_rules as tr

    def clear() -> None:
        tr.template_rules.cache_clear()
        tr._by_meaning.cache_clear()

    served, tr.RULES_FILE = tr.RULES_FILE, path
    clear()
    try:
        tr.template_rules()
        yield
    finally:
        tr.RULES_FILE = served
        clear()


@contextmanager
def held_out(splits: dict, folder: Path) -> Iterator[list[str]]:
    """Judge with ``train_rules`` (written to ``folder/train_rules.json``) for the duration; yields the alternatives
    dropped."""
    cut, dropped = train_rules(splits)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train_rules.json"
    path.write_text(json.dumps(cut, indent=1) + "\n", encoding="utf-8")
    print(f"[rules] judging with the rules cut to training evidence ({path}); dropped: {dropped}", flush=True)
    with rules_from(path):
        yield dropped


def rules_digest() -> str:
    """A digest of the rules file judging reads now (the served one, or the cut one inside ``rules_from``)."""
    import rationad.template_rules as tr

    return hashlib.sha256(tr.RULES_FILE.read_bytes()).hexdigest()[:16]
