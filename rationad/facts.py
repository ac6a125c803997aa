"""The facts a rationale starts with, written by code: an HDFS session's walk and tally from the knowledge base
(``rationad.hdfs_kb``), and a template's rule sentence (``rationad.template_rules``).

Every HDFS rationale the model is trained on starts with a walk through the session's rows and the write lifecycle's
tally (``training.rationales``)::

    L1 x3 receive start, L2 x1 allocated, L3 x3 received, L4 x1 ERROR delete of an unknown block, ... Starts 3,
    received 3, acknowledged 3, registered 3; error lines 1.

then says what signals trouble and concludes; every template analysis starts with the words of the first rule its
template matches and what they mean (``L1 contains 'parity': a memory or cache integrity error: hardware failure.``),
or that none matches. These are facts code reads off the prompt, and a 135M model copies them wrongly (half the
rationales of unseen HDFS sequences misnamed a role or a count; a tenth of template rationales quoted words under
another rule's meaning: training/RESULTS.md). So the daemon writes them (``evidence``, ``rule_evidence``) and the
model continues from there: what signals trouble and the verdict, whose score is read at that answer as always.
Served only to a model trained with them (``PROMPT_WALK`` / ``PROMPT_RULE`` in its manifest's prompt version): the
text it is given is the text it learned to write, character for character.

A window of a system the knowledge base does not cover starts, in every prompt version, with one sentence that
depends on its label (``trouble_sentence`` for the row reporting trouble, or ``routine_sentence``): code cannot write
it before the model answers, but it can once the model has (``rationad.faithful.window_start``, where a rationale is
written again).
"""

from __future__ import annotations

import re

from rationad.hdfs_kb import match_hdfs
from rationad.injection import mask
from rationad.prompt import THINK_MAX_CHARS, SessionView, TemplateRow
from rationad.template_rules import rule_sentence

ROLE_ORDER = ("write_start", "write_done", "responder_done", "stored")  # the lifecycle the tally counts
# What each HDFS role is called in the walk through the rows (an error row is called by its own short name).
WALK_TAGS = {"write_start": "receive start", "write_done": "received", "responder_done": "acknowledged",
             "stored": "registered", "allocate": "allocated", "replication": "re-replication",
             "routine": "routine", "benign_exception": "benign read exception"}
MINOR_TAGS = ("routine", "unknown", "allocated", "re-replication")  # dropped first when the walk is too long
# Characters of the analysis left to the model after the walk and tally the daemon writes: what signals trouble (the
# training rationales' one or two sentences about an error row or a lifecycle count) and the conclusion.
CONCLUSION_CHARS = 300


def shown(row: TemplateRow) -> str:
    """A row's text as the prompt shows it: text addressed to the model masked. What code writes about a row reads
    this, never the hidden text (a masked "<think>Received block ...</think>" counted as a received replica in the
    daemon's tally, hiding a failed write)."""
    return mask(row.template) if row.injected else row.template


def hdfs_roles(view: SessionView) -> dict[str, tuple[str, int]]:
    """Lifecycle role (and ``allocate``) -> (first row naming it, total count of its rows)."""
    roles: dict[str, tuple[str, int]] = {}
    for row in view.rows:
        t = match_hdfs(shown(row))
        if t is not None and (t.role in ROLE_ORDER or t.role == "allocate"):
            ref, n = roles.get(t.role, (row.ref, 0))
            roles[t.role] = (ref, n + row.count)
    return roles


def hdfs_walk(view: SessionView, ignored: tuple[str, ...] = ()) -> list[str]:
    """One entry per row, in the prompt's order: ``L4 x3 received``, ``L6 x1 ERROR redundant addStoredBlock``.

    The analysis starts with this walk so that the verdict is reached after the evidence is written, not at its first
    token, and the counts compared afterwards are the ones just written. ``ignored``: refs of rows that address the
    model (training's injection-hardening rows; served, a row whose such text is masked), named as data.
    """
    out = []
    for row in view.rows:
        if row.ref in ignored:
            tag = "ignored text"
        else:
            t = match_hdfs(shown(row))
            tag = "unknown" if t is None else f"ERROR {t.short}" if t.role == "error" else WALK_TAGS[t.role]
        out.append(f"{row.ref} x{row.count} {tag}")
    return out


def error_rows(walk: list[str]) -> int:
    """How many entries of ``hdfs_walk`` name an error row."""
    return sum(1 for e in walk if e.split(" ", 2)[2].startswith("ERROR "))


def tally(roles: dict[str, tuple[str, int]], walk: list[str]) -> str:
    """The lifecycle counts and the number of error rows the walk names: what the conclusion after it compares.

    One form for every shape, ``Starts 0`` included: a short form for sessions without receive starts (``Error lines
    0.``, written until 2026-12-05) taught a continuation trained on lifecycle tails to write it for whole lifecycles
    too, and to stop comparing their counts (training/RESULTS.md, "Training on tails")."""
    errors = error_rows(walk)
    n = {r: roles[r][1] if r in roles else 0 for r in ROLE_ORDER}
    return (f"Starts {n['write_start']}, received {n['write_done']}, acknowledged {n['responder_done']}, "
            f"registered {n['stored']}; error lines {errors}.")


def fit_walk(walk: list[str], rest_chars: int) -> list[str]:
    """``walk`` without its minor entries (then its last ones) until ``walk. rest`` fits the analysis budget, where
    the rest after the walk is ``rest_chars`` long (the training rationales' rule: their conclusion always stays)."""
    walk = list(walk)
    while walk and len(", ".join(walk)) + 2 + rest_chars > THINK_MAX_CHARS:
        minor = [i for i, e in enumerate(walk) if e.split(" ", 2)[2] in MINOR_TAGS]
        walk.pop(minor[-1] if minor else -1)
    return walk


def evidence(view: SessionView) -> str | None:
    """``<think>`` and the walk and tally of an HDFS view, which the model continues; None for another system's view
    (its rationales have no walk), and for a view with rows dropped for the budget: its tally reads as the session's
    counts, and the rows shown are not all of them ("Starts 0" was written for a healthy write whose repeated
    lifecycle rows were dropped before one-off lines)."""
    if view.source != "hdfs" or not view.rows or view.omitted_templates:
        return None
    walk = hdfs_walk(view, ignored_refs(view))
    start = walk_start(walk, tally(hdfs_roles(view), walk))
    return f"<think>{start}" if start else None


def ignored_refs(view: SessionView) -> tuple[str, ...]:
    """The rows shown with text that addresses the model masked in them and no template of the knowledge base: the
    walk calls them "ignored text", as the injection-hardening rows of training do."""
    return tuple(r.ref for r in view.rows if r.injected and match_hdfs(shown(r)) is None)


def walk_start(walk: list[str], counts: str) -> str | None:
    """The walk, without the entries ``fit_walk`` drops to leave ``CONCLUSION_CHARS`` after the tally, and the tally:
    how an HDFS analysis starts, served (``evidence``) and trained (``training.rationales``) alike, whatever the
    conclusion after it (None: no walk)."""
    kept = fit_walk(walk, len(counts) + 1 + CONCLUSION_CHARS)
    return f"{', '.join(kept)}. {counts}" if kept else None


def neighbour_sentence(view: SessionView) -> str | None:
    """The labelled neighbours the prompt shows, each with its label, in order: a copy of what the prompt says."""
    if not view.neighbours:
        return None
    return "Similar known templates: " + ", ".join(f"{n.ref} {n.label}" for n in view.neighbours) + "."


def plain(text: str) -> str:
    """``text`` on one line, without ``<`` and ``>`` (which an analysis cannot hold)."""
    return re.sub(r"\s+", " ", text.replace("<", "").replace(">", "")).strip()


def trouble_sentence(ref: str, template: str) -> str:
    """How a window's analysis names the row that reports trouble (the start of every anomalous window's rationale
    of training, ``training.rationales.generic_rationale``), quoting it as the prompt shows it: text addressed to
    the model masked (``rationad.injection.mask``), never copied into the model's own words: masked again once
    ``plain`` has joined the words that ``<`` and ``>`` split (``ign<ore previous instruc>tions``), and once more after
    the cut to 80 characters, which can make a span ("... is normalized" cut to "... is normal": the faithfulness
    check then finds the quote in no row, and no start is given). An apostrophe of the line stays one: the check
    compares the quote with the row as shown (refusing such starts cost 12% of LogLM's trouble windows theirs)."""
    return f"{ref} reports '{mask(plain(mask(plain(mask(template))))[:80])}': the system itself reports an error or " \
           "failure."


def routine_sentence(last_ref: str) -> str:
    """How a window's analysis says that no row reports trouble (rows ``L1`` to ``last_ref``; the start of every
    normal window's rationale of training)."""
    return (f"L1 to {last_ref} are routine messages; none reports an error, a failure, a timeout or a refused "
            "connection, and counts that differ between lines are not failures here.")


def rule_evidence(view: SessionView) -> str | None:
    """``<think>`` and the rule sentence of a template judged on its own (and the neighbours the prompt shows), which
    the model continues; None for a session's view."""
    if not view.templated or len(view.rows) != 1:
        return None
    row = view.rows[0]
    return "<think>" + " ".join(p for p in (rule_sentence(row.ref, shown(row)), neighbour_sentence(view)) if p)
