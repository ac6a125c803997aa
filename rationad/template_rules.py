"""The trouble vocabulary of template rationales: an ordered list of keyword rules (``data/template_rules.json``).

Each rule names words or phrases of a log message, what a message with them means operationally, and whether it
signals trouble; the first matching rule in order wins. The training data writes template rationales from these rules
(``L1 contains 'parity': a memory or cache integrity error: hardware failure.``, ``training.rationales``), so a
served rationale in that grammar can be checked against them (``rationad.faithful``): the quoted words must be ones
the meaning's rule names, and an anomalous answer needs evidence that names trouble. The file lives with the daemon
because serving reads it; training imports it from here (the vocabulary trained is the vocabulary checked).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

RULES_FILE = Path(__file__).resolve().parent / "data" / "template_rules.json"


class RulesError(ValueError):
    """The rules file is missing or malformed (the message names the file)."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    verdict: str  # "normal" | "anomalous"
    meaning: str


@lru_cache(maxsize=1)
def template_rules() -> tuple[tuple[Rule, ...], dict]:
    """(the rules in order, the default for a message no rule matches)."""
    try:
        data = json.loads(RULES_FILE.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RulesError(f"{RULES_FILE}: cannot read the template rules: {exc}") from exc
    rules = []
    for n, r in enumerate(data.get("rules", []), start=1):
        try:
            rule = Rule(r["name"], re.compile(r["pattern"], re.I), r["verdict"], r["meaning"])
        except (KeyError, TypeError, re.error) as exc:
            raise RulesError(f"{RULES_FILE}: rule {n}: {exc!r}") from None
        if rule.verdict not in ("normal", "anomalous"):
            raise RulesError(f"{RULES_FILE}: rule {n}: verdict {rule.verdict!r} is neither normal nor anomalous")
        rules.append(rule)
    if not isinstance(data.get("default"), dict) or "meaning" not in data["default"]:
        raise RulesError(f"{RULES_FILE}: no default (the meaning of a message no rule matches)")
    return tuple(rules), data["default"]


def match_rule(text: str) -> tuple[Rule | None, str | None]:
    """(first matching rule, the matched words) for a message; (None, None) when none matches."""
    rules, _ = template_rules()
    for r in rules:
        m = r.pattern.search(text)
        if m:
            return r, m.group(0)
    return None, None


@lru_cache(maxsize=1)
def _by_meaning() -> dict[str, Rule]:
    return {r.meaning.lower(): r for r in template_rules()[0]}


def rule_of_meaning(meaning: str) -> Rule | None:
    """The rule whose meaning sentence this is (as a rationale writes it), if any."""
    return _by_meaning().get(" ".join(meaning.split()).lower())


def names_trouble(text: str) -> bool:
    """Whether ``text`` holds words a rule that signals trouble names."""
    return any(r.verdict == "anomalous" and r.pattern.search(text) for r in template_rules()[0])


def rule_sentence(ref: str, template: str) -> str:
    """The first sentence of a template analysis: the words of the first rule ``template`` matches and what that rule
    says they mean (``L1 contains 'parity': a memory or cache integrity error: hardware failure.``), or that none
    matches. The training rationales start with it (``training.rationales``), and the daemon writes it for a model
    trained with it (``rationad.facts.rule_evidence``)."""
    rule, words = match_rule(template)
    if rule is None:
        return f"{ref} has no severity word or failure class: a routine status message."
    quoted = re.sub(r"\s+", " ", (words or "").replace("<", "").replace(">", "")).strip()[:60]
    return f"{ref} contains '{quoted}': {rule.meaning}."
