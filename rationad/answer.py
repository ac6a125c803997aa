"""Parse a model completion into a verdict, a rationale and its evidence. Never raises on model output."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rationad.prompt import SessionView, TemplateRow

_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.S | re.I)
_REF = re.compile(r"\bL(\d{1,4})\b")
_SYNONYMS = {
    "normal": "normal",
    "anomalous": "anomalous",
    "anomaly": "anomalous",
    "abnormal": "anomalous",
}


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    verdict: str | None  # "normal" | "anomalous" | None when malformed
    rationale: str
    cited: tuple[TemplateRow, ...]  # citations that exist in the session, in order of first citation
    ungrounded_refs: tuple[str, ...]  # citations of lines that are not in the session
    error: str | None  # why the completion is malformed, else None
    raw: str

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def grounded(self) -> bool:
        return not self.ungrounded_refs


def citations(rationale: str, view: SessionView) -> tuple[tuple[TemplateRow, ...], tuple[str, ...]]:
    """Split the ``L<n>`` references of a rationale into rows of the session and refs absent from it."""
    cited: dict[str, TemplateRow] = {}
    missing: dict[str, None] = {}
    for m in _REF.finditer(rationale):
        ref = f"L{int(m.group(1))}"
        row = view.row(ref)
        if row is not None:
            cited.setdefault(ref, row)
        else:
            missing.setdefault(ref, None)
    return tuple(cited.values()), tuple(missing)


def parse_completion(text: str, view: SessionView) -> ParsedAnswer:
    """Read ``<think>…</think><answer>…</answer>``; the last answer tag wins; unknown labels are malformed."""
    text = text or ""
    think_m = _THINK.search(text)
    answers = _ANSWER.findall(text)
    rationale = think_m.group(1).strip() if think_m else ""
    error: str | None = None
    verdict: str | None = None
    if not think_m:
        error = "missing <think> section"
    elif not rationale:
        error = "empty <think> section"
    if not answers:
        error = error or "missing <answer> section"
    else:
        verdict = _SYNONYMS.get(answers[-1].strip().lower())
        if verdict is None:
            error = error or f"unknown answer {answers[-1][:40]!r}"
    if error is not None:
        verdict = None
    cited, missing = citations(rationale, view)
    return ParsedAnswer(verdict, rationale, cited, missing, error, text)
