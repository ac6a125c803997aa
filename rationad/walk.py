"""The facts an HDFS rationale starts with, written by code from the knowledge base (``rationad.hdfs_kb``).

Every HDFS rationale the model is trained on starts with a walk through the session's rows and the write lifecycle's
tally (``training.rationales``)::

    L1 x3 receive start, L2 x1 allocated, L3 x3 received, L4 x1 ERROR delete of an unknown block, ... Starts 3,
    received 3, acknowledged 3, registered 3; error lines 1.

then says what signals trouble and concludes. The walk and tally are facts: each entry reads the row it names (its
count, and the role the knowledge base gives its template), and the tally adds them up. A 135M model copies them
wrongly on orders it has not seen (half the rationales of unseen HDFS sequences misnamed a role or a count;
training/RESULTS.md). So the daemon writes them (``evidence``) and the model continues from there: it writes what
signals trouble and the verdict, and its score is read at that answer as always. Served only to a model trained with
this grammar (``PROMPT_WALK`` in its manifest's prompt version): the text it is given is the text it learned to
write, character for character.
"""

from __future__ import annotations

from rationad.hdfs_kb import match_hdfs
from rationad.prompt import THINK_MAX_CHARS, SessionView

ROLE_ORDER = ("write_start", "write_done", "responder_done", "stored")  # the lifecycle the tally counts
# What each HDFS role is called in the walk through the rows (an error row is called by its own short name).
WALK_TAGS = {"write_start": "receive start", "write_done": "received", "responder_done": "acknowledged",
             "stored": "registered", "allocate": "allocated", "replication": "re-replication",
             "routine": "routine", "benign_exception": "benign read exception"}
MINOR_TAGS = ("routine", "unknown", "allocated", "re-replication")  # dropped first when the walk is too long
# Characters of the analysis left to the model after the walk and tally the daemon writes: what signals trouble (the
# training rationales' one or two sentences about an error row or a lifecycle count) and the conclusion.
CONCLUSION_CHARS = 300


def hdfs_roles(view: SessionView) -> dict[str, tuple[str, int]]:
    """Lifecycle role (and ``allocate``) -> (first row naming it, total count of its rows)."""
    roles: dict[str, tuple[str, int]] = {}
    for row in view.rows:
        t = match_hdfs(row.template)
        if t is not None and (t.role in ROLE_ORDER or t.role == "allocate"):
            ref, n = roles.get(t.role, (row.ref, 0))
            roles[t.role] = (ref, n + row.count)
    return roles


def hdfs_walk(view: SessionView, ignored: tuple[str, ...] = ()) -> list[str]:
    """One entry per row, in the prompt's order: ``L4 x3 received``, ``L6 x1 ERROR redundant addStoredBlock``.

    ``ignored``: refs of rows written into training rows to address the model (injection hardening), named as data.
    """
    out = []
    for row in view.rows:
        if row.ref in ignored:
            tag = "ignored text"
        else:
            t = match_hdfs(row.template)
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
    """``<think>`` and the walk and tally of an HDFS view (the rows it shows), which the model continues; None for
    another system's view (its rationales have no walk)."""
    if view.source != "hdfs" or not view.rows:
        return None
    walk = hdfs_walk(view)
    counts = tally(hdfs_roles(view), walk)
    kept = fit_walk(walk, len(counts) + 1 + CONCLUSION_CHARS)
    return f"<think>{', '.join(kept)}. {counts}" if kept else None
