"""Parse a model completion into a verdict, a rationale and its evidence. Never raises on model output."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rationad.prompt import THINK_MAX_CHARS, SessionView, TemplateRow, answer_words

_THINK = re.compile(r"<think>(.*?)</think>", re.S)
# What the answer holds is stripped in code: ``\s*(.*?)\s*`` backtracked cubically over the spaces after an
# unclosed <answer> (an unconstrained model can write thousands in its token budget: minutes of the event loop).
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
# Any number of ASCII digits (L12345 is a ref, to no row: flagged), not inside a word of any script: "L9é" in a log line
# is no citation of L9 (it was, ASCII-bounded: review 2026-12-07). A Unicode digit after the id ends it, as the
# narrowed answer regex reads it (``L1١`` cites L1).
REF = re.compile(r"(?<!\w)L([0-9]+)(?![0-9_]|[^\W\d_])")
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
    problems: tuple[str, ...] = ()  # what the session refutes in the rationale (``rationad.faithful``), once checked
    unsupported: bool = False  # anomalous on void evidence, every piece (``rationad.faithful``): served normal

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def grounded(self) -> bool:
        return not self.ungrounded_refs


def ref_name(digits: str) -> str:
    """``L<n>`` of a cited number as written (``L01`` is ``L1``), without ``int`` (no digit limit)."""
    return "L" + (digits.lstrip("0") or "0")


def citations(rationale: str, view: SessionView) -> tuple[tuple[TemplateRow, ...], tuple[str, ...]]:
    """Split the ``L<n>`` references of a rationale into rows of the session and refs absent from it."""
    cited: dict[str, TemplateRow] = {}
    missing: dict[str, None] = {}
    for m in REF.finditer(rationale):
        ref = ref_name(m.group(1))
        row = view.row(ref)
        if row is not None:
            cited.setdefault(ref, row)
        else:
            missing.setdefault(ref, None)
    return tuple(cited.values()), tuple(missing)


def parse_completion(text: str, view: SessionView) -> ParsedAnswer:
    """Read ``<think>…</think><answer>…</answer>``. Only answer tags after the thought count (one inside it is the
    model musing, not answering); they must agree (``normal`` then ``anomalous`` is no verdict); unknown labels are
    malformed."""
    text = text or ""
    think_m = _THINK.search(text)
    answers = _ANSWER.findall(text, think_m.end()) if think_m else []
    rationale = think_m.group(1).strip() if think_m else ""
    error: str | None = None
    verdict: str | None = None
    if not think_m:
        error = "missing <think> section"
    elif not rationale:
        error = "empty <think> section"
    elif "<think>" in text[think_m.end():]:  # a second thought: its citations and claims would go unchecked
        error = "a second <think> section"
    if not answers:
        error = error or "missing <answer> section"
    else:
        verdicts = {_SYNONYMS.get(a.strip().lower()) for a in answers}
        unknown = next((a for a in answers if _SYNONYMS.get(a.strip().lower()) is None), None)
        if unknown is not None:
            error = error or f"unknown answer {unknown[:40]!r}"
        elif len(verdicts) > 1:
            error = error or "conflicting answers: " + " then ".join(a.strip()[:20] for a in answers)
        else:
            (verdict,) = verdicts
    if error is not None:
        verdict = None
    cited, missing = citations(rationale, view)
    return ParsedAnswer(verdict, rationale, cited, missing, error, text)


ANSWER_WORDS = ("normal", "anomalous")
ANSWER_OPEN = "<answer>"

# A rationale that ran past the token budget is cut and answered from there (``close_cut_thought``): it ends with
# this mark, so a reader of the event sees it was cut, and the answer that follows it is constrained to this regex
# (``answer_words``: with one verdict, the close held to it).
CUT_MARK = " …"
CLOSE_REGEX = answer_words()
_SENTENCE_END = re.compile(r"[.;!?](?=\s)")
_CLAUSE_END = re.compile(r"[,:](?=\s)")


def close_cut_thought(text: str, view: SessionView) -> str | None:
    """The start of an answer whose ``<think>`` ran out of tokens before it closed, cut and closed so that the model
    can answer from it: ``<think>`` + the rationale up to its last complete sentence (or, when it has none, its last
    complete clause: the walk of rows the model was writing) + ``CUT_MARK`` + ``</think>\n<answer>``. A cited line
    that is not in the session ends the text before it (a rationale that walks past the session's last row is where
    such answers loop). An answer cut after its thought closed (``<answer>anom``) is ``<think>`` + its whole
    rationale + ``</think>\n<answer>``. None when ``text`` is not such an answer (it has its answer, or never opened a
    thought) or when nothing complete is left.

    This is budget forcing: the verdict is the model's own, read after the reasoning it managed to write, instead of
    a malformed answer and a dead-lettered session (with constrained output a cut thought is the only malformed
    shape left).
    """
    head = "<think>"
    if not text.startswith(head):
        return None
    if "</think>" in text:  # the budget ran out in the answer: the rationale is whole, only the word is missing
        thought, _, after = text.partition("</think>")
        return None if "</answer>" in after or "<think>" in thought[len(head):] else thought + "</think>\n<answer>"

    body = text[len(head):THINK_MAX_CHARS - len(CUT_MARK) + len(head)]  # the closed text must fit ANSWER_REGEX
    for m in REF.finditer(body):
        if view.row(ref_name(m.group(1))) is None:
            body = body[:m.start()]
            break
    ends = [m.end() for m in _SENTENCE_END.finditer(body + " ")]
    if ends:
        body = body[:ends[-1]].strip()
    else:  # a walk that never finished its first sentence ("L1 x4 receive start, L2 x1 allocated, ..."): its last item
        ends = [m.start() for m in _CLAUSE_END.finditer(body)]
        if not ends:
            return None
        body = body[:ends[-1]].strip()
    if not body:
        return None
    return f"{head}{body}{CUT_MARK}</think>\n{ANSWER_OPEN}"


def answer_score(tokens: Sequence[str], candidates: Sequence[Sequence[tuple[str, float]]],
                 prefix: str = "") -> float | None:
    """The model's probability of ``anomalous`` where its answer word starts, from per-token logprobs; None when the
    completion has no ``<answer>`` or no logprobs there.

    ``tokens`` are the completion's tokens as text (their concatenation is the completion), ``candidates[i]`` the
    (token text, logprob) pairs returned for position ``i`` (vLLM's top-k, the sampled token among them). At the
    token where the word starts (the first token after the ``<answer>`` whose section gives the verdict: the last
    closed one, else the last opened), every candidate that spells a prefix
    of one answer word (``n``, ``norm``, ``normal`` / ``a``, ``an``, ...; the words start with different letters, so
    no token counts for both) adds its probability to that word, and the score is ``A / (A + N)``. This ratio does
    not depend on what else was allowed at that position: structured output masks the logits before vLLM computes
    the logprobs (they are renormalised over the tokens the answer pattern allows), and renormalising keeps the
    ratio of any two allowed tokens. With constrained output it is the probability that the constrained model,
    sampled at temperature 1 from its own rationale, answers ``anomalous``: from this token on the word is decided.
    A word with no candidate in the top-k gets the smallest returned probability (an upper bound on any token
    outside the top-k), so the score is then bounded, not exact; it can only happen for a score near 0 or 1. Without
    a second candidate there (no top-k returned) nothing bounds the other word: None.
    README "Events" says the same.
    ``prefix``: text the completion continued (an answer after a cut rationale, ``close_cut_thought``), read as one
    token before ``tokens`` with no candidates.
    """
    if prefix:
        tokens, candidates = [prefix, *tokens], [[], *candidates]
    text = "".join(tokens)
    think = _THINK.search(text)
    after = think.end() if think else 0  # as ``parse_completion``: an answer tag inside the thought is not the answer
    closed = None
    for closed in _ANSWER.finditer(text, after):  # the section that gives the verdict: the last closed
        pass
    at = text.rfind(ANSWER_OPEN, after) if closed is None else closed.start()
    if at < 0 or len(candidates) < len(tokens):
        return None
    start = at + len(ANSWER_OPEN)
    if not any(text.startswith(w, start) for w in ANSWER_WORDS):
        return None  # written otherwise ("Normal", " normal", "abnormal": unconstrained output): the candidates at
        # that position are not the alternatives of the word the parser reads, so they give no score for it
    pos = 0
    for i, tok in enumerate(tokens):  # the token holding the word's first character
        if pos + len(tok) > start:
            break
        pos += len(tok)
    else:
        return None
    if len(candidates[i]) < 2:
        # no top-k there (a gateway that drops it, or caps it at one): the sampled token's own logprob would be the
        # bound for the other word, scoring every answer 0.5, anomalous at any threshold (review 2026-12-07)
        return None
    before = text[pos:start]  # the part of that token before the word (empty when the token starts the word)
    mass: dict[str, list[float]] = {w: [] for w in ANSWER_WORDS}
    lowest = math.inf
    for cand, lp in candidates[i]:
        lowest = min(lowest, lp)
        if not cand.startswith(before):
            continue
        rest = cand[len(before):]
        if not rest:
            continue
        for w in ANSWER_WORDS:
            if w.startswith(rest) or rest.startswith(w):
                mass[w].append(lp)
    if not mass["normal"] and not mass["anomalous"]:
        return None
    log_n = _logsumexp(mass["normal"]) if mass["normal"] else lowest
    log_a = _logsumexp(mass["anomalous"]) if mass["anomalous"] else lowest
    if log_a == -math.inf and log_n == -math.inf:
        return None
    if log_a >= log_n:
        score = 1.0 / (1.0 + math.exp(log_n - log_a))
    else:
        e = math.exp(log_a - log_n)
        score = e / (1.0 + e)
    return score if 0.0 <= score <= 1.0 else None  # a NaN logprob gives no score (NaN compares false)


def _logsumexp(xs: Sequence[float]) -> float:
    top = max(xs)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(x - top) for x in xs))


def served_verdict(answer: ParsedAnswer, score: float | None, threshold: float | None) -> str | None:
    """The verdict served for ``answer``: ``thresholded_verdict``, except that an answer ``unsupported`` by its own
    evidence (every piece void: ``rationad.faithful.unsupported``) is never anomalous."""
    verdict = thresholded_verdict(answer.verdict, score, threshold)
    return "normal" if verdict == "anomalous" and answer.unsupported else verdict


def ranked_score(score: float | None, unsupported: bool) -> float | None:
    """The score that ranks an answer against a threshold (PR curves, the threshold a release chooses): the model's,
    or 0 for an answer served normal on void evidence (``served_verdict``: no threshold makes it anomalous)."""
    return 0.0 if unsupported and score is not None else score


def thresholded_verdict(answer_verdict: str | None, score: float | None, threshold: float | None) -> str | None:
    """The verdict at ``threshold``: ``anomalous`` when ``score >= threshold``. The model's own answer when there is
    no score (an answer cached before scores existed, a client that returns no logprobs) or no threshold; None
    (malformed) stays None: a threshold never turns an unreadable answer into a verdict."""
    if answer_verdict is None or score is None or threshold is None:
        return answer_verdict
    return "anomalous" if score >= threshold else "normal"
