"""What code can check of a rationale against the session it explains, and what is never served.

Grounding (``rationad.answer``) checks that every cited line exists; a rationale can cite real lines and still say false
things about them. These checks read the statements of the project's rationale grammar that the session itself can
confirm or refute, for any log source:

- **counts**: ``L3 x5`` says row L3 occurs 5 times in the session;
- **quoted words**: ``L1 contains 'parity'`` says the word is in L1's text; a word quoted without a line must be
  somewhere in the session;
- **meanings**: ``L1 contains 'parity': a memory or cache integrity error: hardware failure.`` says the quoted words
  are of the class that meaning sentence belongs to (``rationad.template_rules``; 0.3.1 wrote "contains 'close': a
  network or service connection problem" of every Proxifier connection-close template, and 'close' is not a word of
  that class);
- **severity**: a line said to report an error or failure must carry a failure word (not for HDFS, whose knowledge
  base calls lines failures by their template, checked below); a line said to have "no
  severity word or failure class" must match no rule that signals trouble (0.3.1 said it of "divide-by-zero {*}");
- **neighbours**: ``Similar known templates: N1 anomalous, N2 normal`` (or, in an earlier grammar, ``N1, a similar
  known template, was anomalous`` and ``No similar known template was normal``) says
  what the labelled neighbours shown in the prompt (``rationad.neighbours``) are labelled; a neighbour not shown is
  not there to cite;
- **foreign phrases**: HDFS lifecycle phrases (receive starts, replicas, DataNodes) in a session of another system;
- **training-only sentences**: sentences the training rationales wrote when their rules could not explain a label
  ("judged anomalous from the expert label for this template"): they mean nothing to an operator.
- **loops**: the same sentence, or the same run of three clauses, written three times or more: greedy decoding went
  round until the token budget cut it (seen on two-line fragments: "L1 x1 error lines 1. L1 x1 error lines 1. ...",
  and on unseen HDFS orders: "..., L11 x1 re-replication, L1, L2, L3, ..., L11, L1, L2, ..."); nothing in it explains.

For HDFS sessions the knowledge base (``rationad.hdfs_kb``, read by ``rationad.facts`` as the daemon writes a walk)
checks more:

- **roles**: a walk entry ``L2 x3 received`` must name the row's role as the knowledge base reads its template (an
  ``ERROR ...`` entry an error row, and a lifecycle or routine tag that row's tag);
- **tally**: ``Starts 3, received 2, acknowledged 2, registered 2; error lines 1.`` must be the session's counts (and
  ``Error lines 1.``, the short form models released before 2026-12-05 write without receive starts, its error rows);
- **pairs**: ``3 receive starts but 1 completions`` must be the session's starts and one of its completion counts
  (0.3.2 wrote "3 receive starts but 2 completions" under a tally of 3 received, 3 acknowledged, 3 registered).

``problems`` lists what failed (an empty list is no proof of truth: only what the grammar lets code check);
``servable`` drops training-only sentences from a rationale before it is served; the judge writes a rationale with a
refuted statement again (``rationad.judge``). The evaluation measures the share of rationales with no problem
(``training.faithfulness``).

**Unsupported answers.** An anomalous answer whose rationale states evidence (``L1 contains '<words>': ...``) and
every piece of it is void (the line it cites names no trouble: no failure word and no word of a rule that signals
trouble) rests on nothing the session holds; ``checked`` marks it ``unsupported`` and the served verdict
is normal (``rationad.answer.served_verdict``; the event keeps the model's answer, its score and the reason). An
answer that states no evidence (``This message came with failures on this system before``), or only words it calls
benign, is left to the model.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, replace

from rationad.answer import CUT_MARK, REF, ParsedAnswer, ref_name
from rationad.facts import (WALK_TAGS, error_rows, hdfs_roles, hdfs_walk, ignored_refs, plain, routine_sentence,
                            shown, tally, trouble_sentence)
from rationad.injection import mask
from rationad.prompt import SessionView, TemplateRow, is_evidence
from rationad.template_rules import Rule, match_rule, names_trouble, rule_of_meaning

# Phrases of sentences written for training rows the rules could not explain; never served, always a problem.
TRAINING_ONLY = re.compile(
    r"expert label|experts label|labelled sequence pattern|labelled healthy|the knowledge base", re.I)
_SENTENCE = re.compile(r"[^.!?]*[.!?]+|[^.!?]+$")
_COUNT = re.compile(r"\bL([0-9]{1,4}) x([0-9]{1,9})\b")  # bounded: int() of thousands of digits raises
# "L1 contains '<words>'" (an apostrophe inside a word, Couldn't, is quoted text), and the meaning sentence after it
_CONTAINS = re.compile(r"\bL([0-9]{1,4})\s+(?:contains|reports|shows|says|mentions|has)\s+"
                       r"(?:the\s+(?:words?|text|phrase|string)\s+)?"
                       r"'((?:[^']|'(?=[A-Za-z])){1,200})'(?![A-Za-z])(?::\s*([^.]{1,200}))?")
_QUOTED = re.compile(r"(?<![A-Za-z])'([^'\s][^']{0,198})'(?![A-Za-z])")
# Double, curly and back quotes read as the grammar's single quotes: a quote must be checked whatever marks it (one
# in "double quotes" was read as no quote, and an anomalous answer on invented words was served as anomalous).
# A curly single mark inside a word (don\u2019t, L3\u2019s) is an apostrophe, not a quote. The lines a quote is checked
# against are straightened the same way (a template may hold "admin" or `nobody.nobody').
_QUOTE_MARKS = re.compile("[\"\u201c\u201d\u201e`\u00b4\u2032]|(?<![A-Za-z0-9])[\u2018\u2019\u201a]"
                          "|[\u2018\u2019\u201a](?![A-Za-z])")


def _straight(text: str) -> str:
    return _QUOTE_MARKS.sub("'", text)
_CLAIMS_FAILURE = re.compile(r"\b(?:reports? an? (?:error|failure)|reports? (?:errors|failures)|is an? (?:error|"
                             r"failure)|(?:error|failure) (?:line|message))\b", re.I)
_FAILURE_WORD = re.compile(r"err|fail|fatal|exception|panic|abort|refus|timed? ?out|denied|crit|severe|corrupt|"
                           r"unreachable|lost|kill|warn|invalid|cannot|can't|n't\b|unable|down|parity|check|"
                           r"interrupt|halt|reset|bad|illegal|violation|overflow|fault|\bnot\b", re.I)


def _names_failure(template: str) -> bool:
    """Whether a line's text has a failure word: ``_FAILURE_WORD`` or the prompt's evidence of trouble
    (``rationad.prompt.is_evidence``: "crash", "out of memory", ...). The prompt put such a line first as evidence, and
    an anomalous answer citing it was served normal as void, and its trained first sentence refuted."""
    return _FAILURE_WORD.search(template) is not None or is_evidence(template)


_NO_SEVERITY = re.compile(r"\bL([0-9]{1,4}) has no severity word")
_HDFS_PHRASES = re.compile(r"receive starts?|replicas?\b|datanode|namenode|\bStarts \d+, received \d+", re.I)
_NEIGHBOURS_WERE = re.compile(r"\b(N\d{1,2}(?:(?:,\s*|\s+and\s+)N\d{1,2})*),? "
                              r"(?:a similar known template|similar known templates),? (?:was|were) "
                              r"(normal|anomalous)\b")
# "Similar known templates: N1 anomalous, N2 normal."
_NEIGHBOUR_LISTED = re.compile(r"\b(N\d{1,2}) (normal|anomalous)\b")
_NO_NEIGHBOUR_WAS = re.compile(r"\bNo similar known template was (normal|anomalous)\b")
_TAGS = "|".join(re.escape(t) for t in sorted(set(WALK_TAGS.values()) | {"unknown", "ignored text"}, key=len,
                                              reverse=True))
_WALK_ENTRY = re.compile(rf"\bL([0-9]{{1,4}}) x[0-9]+ (ERROR\b|{_TAGS})")
_TALLY = re.compile(r"\bStarts (\d+), received (\d+), acknowledged (\d+), registered (\d+); error lines (\d+)")
_ERRORS = re.compile(r"\bError lines ([0-9]+)")
_PAIR = re.compile(r"\b([0-9]+) receive starts but ([0-9]+) completions")
# the knowledge base's two other pair sentences (rationad/data/hdfs_kb.json), each checked against its own role
_PAIR_OF = {"responder_done": re.compile(r"\b([0-9]+) receive starts but ([0-9]+) PacketResponder terminations"),
            "stored": re.compile(r"\b([0-9]+) receive starts but ([0-9]+) replicas registered by the NameNode")}
_NEGATION = re.compile(r"\b(?:none|no|not|never|nothing|neither|nor|without)\b", re.I)
LOOP_REPEATS = 3  # a sentence written this often (the grammar never repeats one) is a decoding loop
LOOP_SPAN = 3  # or a run of this many clauses (parts between commas, semicolons, colons and full stops)
_CLAUSE = re.compile(r"[,;:.]+\s*")
# A quote as ``_CONTAINS`` reads one (an apostrophe inside a word, Couldn't, is quoted text), opened where
# ``_straight`` opens one (not after a letter or digit: L3's)
_QUOTED_SPAN = re.compile(r"(?<![A-Za-z0-9])'(?:[^']|'(?=[A-Za-z]))+'(?![A-Za-z])")


@dataclass(frozen=True)
class _Statement:
    """``L1 contains '<word>': <meaning>``: the line it cites (None: no such line), the quoted words, the rule whose
    meaning the sentence after it gives (None: no meaning, or one no rule has)."""
    ref: str
    row: TemplateRow | None
    word: str
    rule: Rule | None


def _statements(rationale: str, view: SessionView) -> list[_Statement]:
    rationale = _straight(rationale)
    out = []
    for m in _CONTAINS.finditer(rationale):
        ref = f"L{int(m.group(1))}"
        out.append(_Statement(ref, view.row(ref), m.group(2), rule_of_meaning(m.group(3)) if m.group(3) else None))
    return out


def _as_shown(row: TemplateRow) -> str:
    """A row's text to find quotes in, lower case: as logged, and for a row with text addressed to the model, also as
    the prompt shows it (masked: ``{*}`` where that text was); with ``<`` or ``>``, also as an analysis can quote it
    (``rationad.facts.plain``: the answer regex forbids both, so "RUNNING -> FAILED" is quoted "RUNNING - FAILED", as
    the daemon's own trouble sentence writes it, and was refuted every time)."""
    shown = [row.template, *([mask(row.template)] if row.injected else [])]
    shown += [plain(t) for t in shown if "<" in t or ">" in t]
    return "\n".join(_straight(t).lower() for t in shown)


def problems(rationale: str, view: SessionView, statements: list[_Statement] | None = None) -> list[str]:
    """What the session refutes in ``rationale`` (one short reason each; empty: nothing code can check failed)."""
    rationale = _straight(rationale)
    out: list[str] = []
    if TRAINING_ONLY.search(rationale):
        out.append("training_only: a sentence written for training, not about this session")
    out += _loop_problems(rationale)
    for m in _COUNT.finditer(rationale):
        row = view.row(f"L{int(m.group(1))}")
        if row is not None and row.count != int(m.group(2)):
            out.append(f"count: says L{int(m.group(1))} x{m.group(2)}, the session has it {row.count} times")
    checked: set[str] = set()
    for st in _statements(rationale, view) if statements is None else statements:
        row, word, rule = st.row, st.word, st.rule
        checked.add(word)
        if row is not None and word.lower() not in _as_shown(row):
            out.append(f"quote: says {st.ref} contains {word!r}, it does not")
        if rule is not None and not rule.pattern.search(word):
            out.append(f"meaning: calls {word!r} {rule.meaning!r}, a class whose words do not include it")
    session_text = "\n".join(_as_shown(r) for r in view.rows)
    for m in _QUOTED.finditer(rationale):
        word = m.group(1)
        if word not in checked and word.lower() not in session_text:
            out.append(f"quote: {word!r} is in no line of the session")
    out += _neighbour_problems(rationale, view)
    if view.source != "hdfs":
        for sentence in _SENTENCE.findall(rationale):
            claim = _CLAIMS_FAILURE.search(sentence)
            if claim is None or _NEGATION.search(sentence[max(0, claim.start() - 40):claim.start()]):
                continue
            for ref in dict.fromkeys(ref_name(x) for x in REF.findall(sentence)):
                row = view.row(ref)
                if row is not None and not row.cut_chars and not _names_failure(row.template):  # a cut row's end
                    out.append(f"severity: says {ref} reports a failure, its text has no failure word")  # is unknown
        for m in _NO_SEVERITY.finditer(rationale):  # the grammar's sentence for a line no rule matches
            row = view.row(f"L{int(m.group(1))}")
            # read as the sentence was written: the row as shown, masked (``facts.shown``)
            rule, words = match_rule(shown(row)) if row is not None else (None, None)
            if rule is not None and rule.verdict == "anomalous":
                out.append(f"severity: says L{int(m.group(1))} has no severity word, it has {words!r} "
                           f"({rule.meaning})")
        if _HDFS_PHRASES.search(rationale):
            out.append("foreign: HDFS lifecycle phrases about a session of another system")
    elif rationale:
        out += _hdfs_problems(rationale, view)
    return out


def _count(digits: str) -> int:
    """A stated count; -1 (no session's) past 9 digits: int() of thousands of digits raises."""
    return int(digits) if len(digits) <= 9 else -1


def _hdfs_problems(rationale: str, view: SessionView) -> list[str]:
    """What the HDFS knowledge base refutes in ``rationale``: walk roles, the tally, receive-start pairs."""
    out = []
    walk = hdfs_walk(view, ignored_refs(view))  # the walk the daemon writes (``rationad.facts.evidence``)
    tag_of = {e.split(" ", 2)[0]: e.split(" ", 2)[2] for e in walk}
    for m in _WALK_ENTRY.finditer(rationale):
        ref, said = f"L{int(m.group(1))}", m.group(2)
        want = tag_of.get(ref)
        if want is None or want == "ignored text":
            continue
        if (said == "ERROR") != want.startswith("ERROR ") or (said != "ERROR" and said != want):
            out.append(f"role: says {ref} is {said!r}, the knowledge base reads it as {want!r}")
    roles = hdfs_roles(view)
    want_tally = tally(roles, walk)
    for m in _TALLY.finditer(rationale):
        if m.group(0) + "." != want_tally:
            out.append(f"tally: says {m.group(0)!r}, the session's is {want_tally!r}")
    errors = error_rows(walk)
    for m in _ERRORS.finditer(rationale):  # the short form of models trained before one tally form: its one number
        if _count(m.group(1)) != errors:
            out.append(f"tally: says {m.group(0)!r}, the session has {errors} error lines")
    starts = roles.get("write_start", ("", 0))[1]
    ends = {roles.get(r, ("", 0))[1] for r in ("write_done", "responder_done", "stored")}
    for m in _PAIR.finditer(rationale):
        if _count(m.group(1)) != starts or _count(m.group(2)) not in ends:
            out.append(f"pair: says {m.group(0)!r}, the session has {starts} starts and completions {sorted(ends)}")
    for role, pair in _PAIR_OF.items():  # were never checked: a false one was served without a rewrite
        count = roles.get(role, ("", 0))[1]
        for m in pair.finditer(rationale):
            if _count(m.group(1)) != starts or _count(m.group(2)) != count:
                out.append(f"pair: says {m.group(0)!r}, the session has {starts} starts and {count} of those")
    return out


def window_start(view: SessionView, verdict: str) -> str | None:
    """``<think>`` and the first sentence a window's analysis was trained to start with for ``verdict``
    (``rationad.facts``), where code finds it true: for ``anomalous``, the first row with error or warning evidence
    (``rationad.prompt.is_evidence``; else with words of a rule that signals trouble), named by ``trouble_sentence``
    (kept when ``problems`` finds nothing in it); for ``normal``, ``routine_sentence`` when no row has those or any
    failure word. None otherwise, and for views whose analyses start otherwise (HDFS sessions, templates)."""
    if view.source == "hdfs" or view.templated or not view.rows:
        return None
    if verdict == "normal":
        # Said only of what the view shows whole: a row cut at its end, or rows dropped for the budget, may hold the
        # trouble ("none reports an error" was written over a dropped storm of segmentation faults).
        if view.omitted_templates or any(r.cut_chars or _names_failure(r.template) or names_trouble(r.template)
                                         for r in view.rows):
            return None
        said = routine_sentence(view.rows[-1].ref)
    else:
        row = next((r for r in view.rows if is_evidence(r.template)), None) or \
            next((r for r in view.rows if names_trouble(r.template)), None)
        if row is None:
            return None
        said = trouble_sentence(row.ref, row.template)
    return None if problems(said, view) else "<think>" + said


def unsupported(rationale: str, view: SessionView, statements: list[_Statement] | None = None) -> str | None:
    """Why the evidence of trouble an anomalous answer states is void, every piece of it (None: it states none, or
    some holds). A piece is a statement about a line's quoted words not called benign (``L1 contains 'close': a
    network or service connection problem``); it holds when the line it cites names trouble anywhere in its text (a
    failure word, or a word of a rule that signals trouble), whatever words the model quoted of it: a quote is often
    a neighbouring word (``'exceeds'`` of "correctable errors exceeds threshold"), cut at 80 characters before the
    failure word, or copied from the masked text the prompt showed, or the line was cut at its end for the budget. It
    is void when the line names none, or the statement cites no line of the session."""
    if view.source == "hdfs":  # HDFS rationales name failures by template (the knowledge base), not by quoted words
        return None
    void = []
    for st in _statements(rationale, view) if statements is None else statements:
        ref, word, rule, row = st.ref, st.word, st.rule, st.row
        if rule is not None and rule.verdict == "normal":  # words called benign: not offered as evidence of trouble
            continue
        if row is not None and (row.cut_chars or _names_failure(row.template) or names_trouble(row.template)):
            return None  # (a row cut at its end: what the cut part names is unknown, so not void)
        void.append(f"{ref} {word!r}: " + ("no such line" if row is None else "the line names no trouble"))
    if not void:
        return None
    return "unsupported: the anomalous answer's evidence is void (" + "; ".join(void[:3]) + \
        (f"; {len(void) - 3} more" if len(void) > 3 else "") + "): served as normal"


def _loop_problems(rationale: str) -> list[str]:
    """The sentences (of some length: not "1.") a rationale writes ``LOOP_REPEATS`` times or more, else the runs of
    ``LOOP_SPAN`` clauses it writes that often: the first of them."""
    # A log line quoted whole may repeat its own clauses: each quote becomes one token of its text, so that it neither
    # splits into clauses nor makes two quotes of other words equal.
    rationale = _QUOTED_SPAN.sub(lambda m: f"'q{zlib.crc32(m.group().encode('utf-8', 'replace'))}'",
                                 _straight(rationale))
    seen: dict[str, int] = {}
    for sentence in _SENTENCE.findall(rationale):
        key = " ".join(sentence.split()).rstrip(" .…")
        if len(key) >= 8:
            seen[key] = seen.get(key, 0) + 1
    looped = [(k, n) for k, n in seen.items() if n >= LOOP_REPEATS]
    if not looped:
        # A loop inside one sentence: a run of LOOP_SPAN clauses written again and again ("L1, L2, L3, ..., L11, L1,
        # L2, L3, ..." until the budget cut it, seen with 0.3.2 on unseen HDFS orders); no clause of the grammar's
        # walks and lists comes back, so a repeated run of them is never an explanation.
        clauses = [" ".join(c.split()) for c in _CLAUSE.split(rationale)]
        clauses = [c for c in clauses if c]
        runs: dict[str, int] = {}
        for i in range(len(clauses) - LOOP_SPAN + 1):
            run = ", ".join(clauses[i:i + LOOP_SPAN])
            runs[run] = runs.get(run, 0) + 1
        looped = [(k, n) for k, n in runs.items() if n >= LOOP_REPEATS]
    if not looped:
        return []
    k, n = looped[0]
    return [f"loop: {k[:60]!r} written {n} times: decoding went round instead of explaining"]


def _neighbour_problems(rationale: str, view: SessionView) -> list[str]:
    shown = {n.ref: n.label for n in view.neighbours}
    said = [(ref, m.group(2)) for m in _NEIGHBOURS_WERE.finditer(rationale)
            for ref in re.findall(r"N\d{1,2}", m.group(1))]
    said += [(m.group(1), m.group(2)) for m in _NEIGHBOUR_LISTED.finditer(rationale)]
    out = [f"neighbour: cites {ref}, the prompt showed no such neighbour" if ref not in shown
           else f"neighbour: says {ref} was {label}, it was {shown[ref]}"
           for ref, label in said if shown.get(ref) != label]
    out += [f"neighbour: says no similar known template was {m.group(1)}, one was"
            for m in _NO_NEIGHBOUR_WAS.finditer(rationale) if m.group(1) in shown.values()]
    return out


def servable(rationale: str, view: SessionView | None = None) -> str:
    """``rationale`` without its training-only sentences (they say nothing about the session) and, given its
    ``view``, cut before the first sentence that cites a line not in the session, ending with ``CUT_MARK``: a served
    rationale cites only lines of its session (the event still lists what the model cited, ``ungrounded_refs``)."""
    absent = view is not None and any(view.row(ref_name(x)) is None for x in REF.findall(rationale))
    if not absent and not TRAINING_ONLY.search(rationale):
        return rationale
    kept: list[str] = []
    for sentence in _SENTENCE.findall(rationale):
        if absent and any(view.row(ref_name(x)) is None for x in REF.findall(sentence)):  # type: ignore[union-attr]
            return " ".join(kept) + CUT_MARK if kept else ""
        if sentence.strip() and not TRAINING_ONLY.search(sentence):
            kept.append(sentence.strip())
    return " ".join(kept)


def checked(answer: ParsedAnswer, view: SessionView) -> ParsedAnswer:
    """``answer`` as served: its rationale's ``problems`` found (in what the model wrote), its training-only
    sentences dropped, and ``unsupported`` set when it is anomalous on void evidence (the reason is its last
    problem)."""
    if not answer.rationale:
        return answer
    statements = _statements(answer.rationale, view)  # both checks read the same statements: parsed once
    found = problems(answer.rationale, view, statements)
    void = unsupported(answer.rationale, view, statements) if answer.verdict == "anomalous" else None
    if void is not None:
        found.append(void)
    served = servable(answer.rationale, view)
    if any(p.startswith("loop:") for p in found):
        served = before_loop(served)
    return replace(answer, rationale=served, problems=tuple(found), unsupported=void is not None)


_CLAUSE_SPAN = re.compile(r"[^,;:.]+")


def before_loop(rationale: str) -> str:
    """``rationale`` cut where it starts to go round (``_loop_problems``), ending with ``CUT_MARK``: at the second time
    its repeated sentence is written, else at the second time its first repeated run of ``LOOP_SPAN`` clauses starts
    ("..., L8, L1, L12, L1, L1, L1, ..." keeps "..., L8, L1, L12, L1 …"). The repetitions explain nothing and hide
    the rest of the event from whoever reads it; the loop stays in ``rationale_problems``. Unchanged when no loop is
    found this way (a loop inside quoted text)."""
    text = _straight(rationale)  # one character for one: positions hold in ``rationale``
    sentences = [(m.start(), " ".join(m.group().split()).rstrip(" .…")) for m in _SENTENCE.finditer(text)]
    counts: dict[str, int] = {}
    for _, key in sentences:
        counts[key] = counts.get(key, 0) + 1
    seen: set[str] = set()
    for pos, key in sentences:
        if len(key) >= 8 and counts[key] >= LOOP_REPEATS:
            if key in seen:
                return _cut_at(rationale, pos)
            seen.add(key)
    clauses = [(m.start(), c) for m in _CLAUSE_SPAN.finditer(text) if (c := " ".join(m.group().split()))]
    keys = [c for _, c in clauses]
    runs: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(keys) - LOOP_SPAN + 1):
        runs.setdefault(tuple(keys[i:i + LOOP_SPAN]), []).append(i)
    looped = sorted(starts for starts in runs.values() if len(starts) >= LOOP_REPEATS)
    return _cut_at(rationale, clauses[looped[0][1]][0]) if looped else rationale


def _cut_at(rationale: str, pos: int) -> str:
    kept = rationale[:pos].rstrip(" ,;:.")
    return kept + CUT_MARK if kept else rationale
