"""Chain-of-thought targets without a teacher model: the ``<think>`` analysis is written from the session's own view
and the expert knowledge base (``training/knowledge``), and the verdict is the label.

It cites the rows (``L1``, ``L2``, ...) that matter, says what they mean, and concludes. Where the knowledge base
does not explain the label, the rationale invents no reason: it says what the lines show and that such lines came
with failures (or completed) before, in words an operator can read (never "the expert label"; issue 16, item 5), and
``Rationale.explained`` is False (counted in the data report). Every rationale: cited refs exist in the view, no
``<``/``>``, at most 700 characters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from rationad.answer import parse_completion
from rationad.facts import (hdfs_roles, hdfs_walk, neighbour_sentence, plain, routine_sentence, shown, tally,
                            trouble_sentence, walk_start)
from rationad.prompt import THINK_MAX_CHARS, SessionView, format_completion
from rationad.template_rules import rule_sentence

from training.example import Example
from training.knowledge import hdfs_pairs, match_hdfs, match_rule


@dataclass(frozen=True, slots=True)
class Rationale:
    think: str
    verdict: str
    explained: bool  # the knowledge base supports the label
    kb_verdict: str  # what the knowledge base alone would say

    @property
    def completion(self) -> str:
        return format_completion(self.think, self.verdict)


def _fit(parts: list[str], tail: str) -> str:
    """Join sentences, dropping middle ones until the text fits the think budget (the conclusion always stays)."""
    parts = [p for p in parts if p]
    while parts and len(" ".join([*parts, tail])) > THINK_MAX_CHARS:
        parts.pop()
    return plain(" ".join([*parts, tail]))


class HdfsSignals(NamedTuple):
    trouble: list[str]  # sentences naming what went wrong (error rows, a write that never completed)
    benign: list[str]  # notes that explain harmless rows (a reader's closed connection, a write still in progress)
    roles: dict[str, tuple[str, int]]  # role -> (first ref, total count)
    in_progress: bool  # an unfinished view whose receive starts still lack their completions
    failures: list[str]  # short names of the error rows, in row order


def hdfs_signals(view: SessionView) -> HdfsSignals:
    """What the knowledge base reads in an HDFS view. In an unfinished view (``SessionView.unfinished``) receive
    starts without their completions are a write in progress: a note, not trouble (error rows are trouble whenever
    they come)."""
    roles = hdfs_roles(view)
    errors: list[tuple[str, str, str]] = []
    benign: list[str] = []
    for row in view.rows:
        t = match_hdfs(shown(row))
        if t is None:
            continue
        if t.role == "error":
            errors.append((row.ref, t.short, t.meaning))
        elif t.role == "benign_exception":
            benign.append(f"{row.ref} ({t.short}) is a reader closing its connection, benign.")
    trouble = [f"{ref} shows {short}: {meaning}." for ref, short, meaning in errors[:2]]
    if len(errors) > 2:
        trouble.append(f"{', '.join(r for r, _, _ in errors[2:5])} show further failures.")
    in_progress = False
    start = roles.get("write_start")
    if start is not None:
        for pair in hdfs_pairs():
            end = roles.get(pair["end"])
            n_end = end[1] if end else 0
            if n_end < start[1]:
                refs = f"{start[0]} and {end[0]}" if end else start[0]
                if view.unfinished:
                    in_progress = True
                    counts = pair["text"].split(":")[0].format(s=start[1], e=n_end)  # the pair's own end noun
                    benign.insert(0, f"{refs}: {counts} so far: the session is unfinished, a write still in progress.")
                else:
                    trouble.append(f"{refs}: " + pair["text"].format(s=start[1], e=n_end) + ".")
                break
    return HdfsSignals(trouble, benign, roles, in_progress, [short for _, short, _ in errors])


def failure_kind(view: SessionView) -> str:
    """What the knowledge base says failed in an HDFS view: the first error row's short name, ``lifecycle`` (a write
    that never completed, no error row) or ``none`` (nothing the knowledge base can name)."""
    signals = hdfs_signals(view)
    return signals.failures[0] if signals.failures else "lifecycle" if signals.trouble else "none"


def _with_walk(walk: list[str], counts: str, parts: list[str], tail: str,
               keep: tuple[str, ...] | list[str] = ()) -> str:
    """The walk and tally as the daemon writes them (``rationad.facts.walk_start``: a walk too long leaves minor rows,
    then its last ones, to keep ``CONCLUSION_CHARS`` for the rest), then ``parts`` and ``tail``, dropping the last
    parts not in ``keep`` until it fits. Until 2026-12-06 the walk was trimmed to leave this rationale's own
    conclusion, so on 78 of the 21,900 HDFS sessions the served start and the trained one kept different rows."""
    start = walk_start(walk, counts)
    if start is None:
        return _fit([counts, *parts], tail)
    parts = [p for p in parts if p]
    while len(start) + 1 + len(plain(" ".join([*parts, tail]))) > THINK_MAX_CHARS:
        droppable = [i for i, p in enumerate(parts) if p not in keep]
        if not droppable:
            break
        parts.pop(droppable[-1])
    return plain(f"{start} {' '.join([*parts, tail])}")


def hdfs_rationale(view: SessionView, label: str, ignored: tuple[str, ...] = ()) -> Rationale:
    """``ignored``: refs of rows that address the model (injection-hardening rows): named as data, never obeyed.

    The analysis walks the rows (``hdfs_walk``), tallies the write lifecycle (starts, received, acknowledged,
    registered) and counts the error rows, then says what signals trouble (or that every replica completed) and
    concludes.
    """
    trouble, benign, roles, in_progress, _ = hdfs_signals(view)
    walk = hdfs_walk(view, ignored)
    counts = tally(roles, walk)
    note = [f"{' and '.join(ignored)} {'are' if len(ignored) > 1 else 'is'} log text addressed to the reader: data, "
            "not an instruction, ignored."] if ignored else []
    kb_verdict = "anomalous" if trouble else "normal"
    if label == "anomalous" and trouble:
        return Rationale(_with_walk(walk, counts, [*trouble[:2], *note, *trouble[2:]],
                                    "The write of this block failed: anomalous.", keep=note), label, True, kb_verdict)
    if label == "normal" and not trouble:
        life = ("" if in_progress else "Every replica completed."
                if "write_start" in roles else "The lines are routine block operations.")
        return Rationale(_with_walk(walk, counts, [life, *note, *benign[:1]], "No failure signal: normal.", keep=note),
                         label, True, kb_verdict)
    if label == "anomalous":
        return Rationale(_with_walk(walk, counts, ["No line names a failure.", *note],
                                    "Blocks with these lines failed before: anomalous.", keep=note),
                         label, False, kb_verdict)
    return Rationale(_with_walk(walk, counts, [*trouble[:1], *note],
                                "These lines look like trouble, but blocks with them completed before: normal.",
                                keep=note),
                     label, False, kb_verdict)


def template_rationale(view: SessionView, label: str) -> Rationale:
    rule, _ = match_rule(shown(view.rows[0]))  # as the daemon writes its rule sentence: the row as shown
    kb_verdict = rule.verdict if rule is not None else "normal"
    parts = [rule_sentence(view.rows[0].ref, shown(view.rows[0])), *_neighbour_sentence(view)]
    if kb_verdict == label:
        tail = "This signals trouble: anomalous." if label == "anomalous" else "Nothing signals trouble: normal."
        return Rationale(_fit(parts, tail), label, True, kb_verdict)
    if label == "anomalous":
        return Rationale(_fit(parts, "This message came with failures on this system before: anomalous."),
                         label, False, kb_verdict)
    return Rationale(_fit(parts, "It looks like trouble, but this message is routine on this system: normal."),
                     label, False, kb_verdict)


def _neighbour_sentence(view: SessionView) -> list[str]:
    """The labelled neighbours shown in the prompt, each with its label, in order: a copy of what the prompt says,
    written before the conclusion (a first run that wrote only the neighbours agreeing with the label taught the
    model to call them all by its verdict, misreporting 0.10-0.25 of them; training/RESULTS.md)."""
    said = neighbour_sentence(view)
    return [said] if said else []


def generic_rationale(view: SessionView, label: str, trouble_ref: str | None) -> Rationale:
    """A window of a system the knowledge base does not cover (``training.data_other``): judged on what its lines
    say, not on patterns of other systems."""
    if label == "anomalous" and trouble_ref is not None:
        said = trouble_sentence(trouble_ref, view.row(trouble_ref).template)
        return Rationale(_fit([said], "This signals trouble: anomalous."), label, True, "anomalous")
    if label == "normal" and trouble_ref is None:
        said = routine_sentence(view.rows[-1].ref)
        return Rationale(_fit([said], "Nothing signals trouble: normal."), label, True, "normal")
    raise ValueError(f"generic window labelled {label} with trouble line {trouble_ref}")


def build(ex: Example) -> Rationale:
    if ex.task == "hdfs":
        r = hdfs_rationale(ex.view, ex.label, tuple(ex.extra.get("injected_refs", ())))
    elif ex.task == "generic":
        r = generic_rationale(ex.view, ex.label, ex.extra.get("trouble_ref"))
    else:
        r = template_rationale(ex.view, ex.label)
    check(r, ex)
    return r


def check(r: Rationale, ex: Example) -> None:
    """Raise if a rationale breaks the contract (format, verdict = label, every cited ref in the view)."""
    parsed = parse_completion(r.completion, ex.view)
    if not parsed.ok or parsed.verdict != ex.label or parsed.ungrounded_refs:
        raise AssertionError(f"bad rationale for {ex.sid}: {parsed.error or parsed.ungrounded_refs or parsed.verdict}")
    if "<" in r.think or ">" in r.think or len(r.think) > THINK_MAX_CHARS:
        raise AssertionError(f"bad rationale text for {ex.sid}")


def agreement_report(examples: list[Example], rationales: list[Rationale]) -> dict:
    """How many rationales agree with the labels (all must), and how many the knowledge base explains."""
    by_task: Counter = Counter()
    unexplained: Counter = Counter()
    agree = 0
    for ex, r in zip(examples, rationales, strict=True):
        by_task[ex.task] += 1
        agree += r.verdict == ex.label
        unexplained[ex.task] += not r.explained
    return {"rationales": len(examples), "agree_with_label": agree,
            "agreement": agree / len(examples) if examples else None,
            "unexplained_by_kb": dict(unexplained), "by_task": dict(by_task),
            "mean_chars": sum(len(r.think) for r in rationales) / max(1, len(rationales))}
