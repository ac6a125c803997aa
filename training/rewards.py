"""GRPO reward parts as plain callables ``(prompts, completions, **columns) -> list[float]`` (TRL's convention).

The paper's reward (RationAnomaly, arXiv 2509.14693), with its intent implemented where the released code differs:
- ``format``: +0.1 when ``<think>`` and ``<answer>`` parse, else -2.0; when the format fails nothing else counts
  (every other part returns 0), and -2.0 is below the worst wrong verdict, so an unparseable answer never pays;
- ``answer`` (asymmetric): caught anomaly +1.5, correct normal +1.0, false alarm -1.0, missed anomaly -2.0;
- ``grounding`` (counted only when the verdict is right): overlap of the analysis with the session's own text and
  with the reference analysis, by word pairs in order (with single words, the reference's vocabulary in any order,
  padded to its length, scored as well as the reference on 23% of the SFT rows; by pairs, on 1.4%:
  ``bench/reward_salad.py``), minus 0.5 for
  each cited line that is not in the session and 0.5 for each statement the session refutes (a count, a role, a
  tally, a quoted word, a failure claim, a foreign or training-only phrase: ``training.faithfulness``, on the view
  read back from the prompt; at most four counted), so a right verdict with a false analysis earns less than one
  with a true analysis;
- ``brevity`` (only when the verdict is right): 1 - relative distance from the reference length.
Columns come from the dataset rows: ``label``, ``reference`` (the reference analysis), ``session`` (the user message
the model saw) and ``n_refs`` (the session's rows are L1..L<n_refs>). The registry maps names to callables and
default weights (total = format + answer + 0.5 * (grounding + brevity)).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rationad.answer import ParsedAnswer, parse_completion
from rationad.prompt import SessionView, TemplateRow, view_from_message
from training.faithfulness import problems as faithfulness_problems

FORMAT_OK, FORMAT_BAD = 0.1, -2.0
ANSWER = {("anomalous", "anomalous"): 1.5, ("normal", "normal"): 1.0,
          ("normal", "anomalous"): -1.0, ("anomalous", "normal"): -2.0}  # (label, verdict) -> reward
UNGROUNDED_PENALTY = 0.5
UNFAITHFUL_PENALTY = 0.5  # per statement the session refutes (training.faithfulness), at most 4 counted
_WORD = re.compile(r"[A-Za-z][A-Za-z]+|\d+")

RewardFunc = Callable[..., list[float]]


def _text(completion: Any) -> str:
    """A completion as text: TRL passes strings, or lists of chat messages for conversational data."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def _view(n_refs: int) -> SessionView:
    rows = tuple(TemplateRow(f"L{i}", "", 1, 0) for i in range(1, int(n_refs) + 1))
    return SessionView(source="", line_count=len(rows), rows=rows)


def _parse(completion: Any, n_refs: int) -> ParsedAnswer:
    return parse_completion(_text(completion), _view(n_refs))


def _bigrams(text: str) -> set[tuple[str, str]]:
    words = [w.lower() for w in _WORD.findall(text)]
    return set(zip(words, words[1:]))


def overlap(candidate: str, reference: str) -> float:
    """Word-bigram F1 (ROUGE-2-like) between two texts, 0..1: words in the reference's order, not only its words
    (with single words, the reference's vocabulary in any order scored as well as the reference itself)."""
    c, r = _bigrams(candidate), _bigrams(reference)
    if not c or not r:
        return 0.0
    common = len(c & r)
    if not common:
        return 0.0
    p, rec = common / len(c), common / len(r)
    return 2 * p * rec / (p + rec)


def format_reward(prompts, completions, n_refs, **_) -> list[float]:
    return [FORMAT_OK if _parse(c, n).ok else FORMAT_BAD for c, n in zip(completions, n_refs, strict=True)]


def answer_reward(prompts, completions, label, n_refs, **_) -> list[float]:
    out = []
    for c, lab, n in zip(completions, label, n_refs, strict=True):
        a = _parse(c, n)
        out.append(ANSWER[(lab, a.verdict)] if a.ok else 0.0)
    return out


# A row the reference walks as "ignored text": text addressed to the model, masked in the prompt (an
# injection-hardening row). The prompt's text alone cannot say so (its masks look like any variable's).
_IGNORED = re.compile(r"\bL([0-9]{1,4}) x[0-9]{1,9} ignored text\b")


def _reward_view(session: str, reference: str) -> SessionView:
    """The view the grounding reward checks against: the prompt read back, with the rows its reference calls ignored
    text marked as rows that address the model. Read back alone, no row was marked, the knowledge base read them as
    unknown, and the reward charged the SFT target's true "L2 x1 ignored text" as refuted (GRPO paid the model to
    unlearn the injection hardening)."""
    from dataclasses import replace

    view = view_from_message(session)
    ignored = {f"L{int(m.group(1))}" for m in _IGNORED.finditer(reference)}
    if not ignored:
        return view
    return replace(view, rows=tuple(replace(r, injected=r.injected or ("ignored",)) if r.ref in ignored else r
                                    for r in view.rows))


def grounding_reward(prompts, completions, label, reference, session, n_refs, **_) -> list[float]:
    out = []
    for c, lab, ref, sess in zip(completions, label, reference, session, strict=True):
        # citations checked against the rows the prompt shows, as served: a prompt with rows dropped for the budget
        # shows ids with gaps (L1-L14, L21), and ids L1..n_refs charged a cited kept row and paid a dropped one (review
        # 2026-12-07)
        view = _reward_view(sess, ref)
        a = parse_completion(_text(c), view)
        if not a.ok or a.verdict != lab:
            out.append(0.0)
            continue
        pairs = _bigrams(a.rationale)
        in_session = len(pairs & _bigrams(sess)) / len(pairs) if pairs else 0.0
        score = 0.5 * in_session + 0.5 * overlap(a.rationale, ref)
        refuted = len(faithfulness_problems(a.rationale, view))
        out.append(score - UNGROUNDED_PENALTY * len(a.ungrounded_refs) - UNFAITHFUL_PENALTY * min(refuted, 4))
    return out


def brevity_reward(prompts, completions, label, reference, n_refs, **_) -> list[float]:
    out = []
    for c, lab, ref, n in zip(completions, label, reference, n_refs, strict=True):
        a = _parse(c, n)
        if not a.ok or a.verdict != lab:
            out.append(0.0)
            continue
        target = max(1, len(ref))
        out.append(max(0.0, 1.0 - abs(len(a.rationale) - target) / target))
    return out


REGISTRY: dict[str, tuple[RewardFunc, float]] = {
    "format": (format_reward, 1.0),
    "answer": (answer_reward, 1.0),
    "grounding": (grounding_reward, 0.5),
    "brevity": (brevity_reward, 0.5),
}


def get(names: Sequence[str]) -> tuple[list[RewardFunc], list[float]]:
    """Reward callables and their weights by name; unknown names are an error."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown rewards {unknown}; known: {sorted(REGISTRY)}")
    return [REGISTRY[n][0] for n in names], [REGISTRY[n][1] for n in names]


def total(prompts, completions, names: Sequence[str] = tuple(REGISTRY), **columns) -> list[float]:
    """The weighted sum of the named parts (what GRPOTrainer optimizes)."""
    funcs, weights = get(names)
    parts = [f(prompts, completions, **columns) for f in funcs]
    return [sum(w * p[i] for w, p in zip(weights, parts, strict=True)) for i in range(len(completions))]
