"""Training rows of the shapes the daemon cuts a block's lifecycle into (issue 16, item 5): tails and heads.

A gap or span bound closes a block's window mid-lifecycle; what follows is judged as its own session: the tail of a
write, with receipts and registrations but fewer (or no) starts. The released model was trained on whole lifecycles
only and on such tails walks rows by the roles a whole lifecycle has (HDFS fragments set: 7 of 30 tails faithful).

Tails are cut at a third and at two thirds of a view's lines (the evaluation's ``HDFS fragments`` set cuts at half,
so most of its tails are not training rows; ``overlap`` says how many are). A tail keeps its block's label only where
the knowledge base reads that label in the tail's own lines (``Rationale.explained``): the tail of a block that failed
in its first lines shows no failure, and a rationale that called it anomalous would have to invent a reason.

Heads are what ``sessions.max_open_secs`` cuts: a window closed while its block is still being written, judged again
with its later lines as the next revision. Their prompts say so (``rationad.prompt.UNFINISHED_NOTE``; the daemon
says it only to a model trained with it, ``training.prompt_stamp``), and their label is what the knowledge base reads
in the head itself: receive starts without completions are a write in progress (normal), an error row is trouble
(anomalous), whatever the block did later. Heads are cut after two lines and at a third and two thirds of a view.
"""

from __future__ import annotations

from collections.abc import Callable

from rationad.prompt import approx_tokens, view_of
from rationad.records import Session

from training.data_hdfs import SOURCE
from training.example import Example
from training.rationales import hdfs_rationale

CUTS = (1 / 3, 2 / 3)  # where a tail starts (a head ends), as a share of the lifecycle's lines
HEAD_MIN = 2  # the shortest head: a window of a write's first two lines
MIN_LINES = 4


def tail_examples(examples: list[Example], max_views: int, *, count_tokens: Callable[[str], int] = approx_tokens,
                  max_prompt_tokens: int = 1024) -> list[Example]:
    """Tails of the ``max_views`` most common HDFS views of at least ``MIN_LINES`` lines (examples must carry their
    ``session``), one per distinct tail view, each explained by the knowledge base under its block's label."""
    from training.evaluate import views_by_traffic

    groups, keys = views_by_traffic(_hdfs_with_sessions(examples))
    out: dict[str, Example] = {}
    for k in keys[:max_views]:
        s: Session = groups[k][0].extra["session"]
        label = _majority(groups[k])
        for cut in CUTS:
            start = int(len(s.lines) * cut)
            lines = s.lines[start:]
            tail = Session(key=s.key, lines=list(lines), close_reason="gap", topic=s.topic, label=label,
                           source_id=f"{s.source_id or s.key}#from{start}")  # index of its first line
            view = view_of(tail, SOURCE, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens)
            ex = Example("hdfs", SOURCE, str(tail.source_id), view, label, "fragment",
                         {"lines": len(lines), "fragment": "tail"})
            if ex.view_key not in out and hdfs_rationale(view, label).explained:
                out[ex.view_key] = ex
    return list(out.values())


def head_examples(examples: list[Example], max_views: int, *, count_tokens: Callable[[str], int] = approx_tokens,
                  max_prompt_tokens: int = 1024) -> list[Example]:
    """Unfinished heads of the ``max_views`` most common HDFS views of at least ``MIN_LINES`` lines, one per distinct
    head view, labelled by what the knowledge base reads in the head (module docstring)."""
    from training.evaluate import views_by_traffic

    groups, keys = views_by_traffic(_hdfs_with_sessions(examples))
    out: dict[str, Example] = {}
    for k in keys[:max_views]:
        s: Session = groups[k][0].extra["session"]
        for end in dict.fromkeys([HEAD_MIN, *(max(HEAD_MIN, int(len(s.lines) * cut)) for cut in CUTS)]):
            lines = s.lines[:end]
            head = Session(key=s.key, lines=list(lines), close_reason="max_open", topic=s.topic,
                           source_id=f"{s.source_id or s.key}#to{end}")  # lines before index ``end``
            view = view_of(head, SOURCE, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens,
                           say_unfinished=True)
            label = hdfs_rationale(view, "normal").kb_verdict
            ex = Example("hdfs", SOURCE, str(head.source_id), view, label, "fragment",
                         {"lines": len(lines), "fragment": "head"})
            out.setdefault(ex.view_key, ex)
    return list(out.values())


def _hdfs_with_sessions(examples: list[Example]) -> list[Example]:
    hdfs = [ex for ex in examples if ex.task == "hdfs" and ex.extra["lines"] >= MIN_LINES]
    missing = [ex.sid for ex in hdfs if "session" not in ex.extra]
    if missing:
        raise ValueError(f"a fragment needs the sessions (load_corpus keep_sessions): {missing[0]} has none")
    return hdfs


def _majority(group: list[Example]) -> str:
    anomalous = sum(ex.label == "anomalous" for ex in group)
    return "anomalous" if anomalous * 2 > len(group) else "normal"


def overlap(train: list[Example], eval_sessions: list[Session], *, count_tokens: Callable[[str], int] = approx_tokens,
            max_prompt_tokens: int = 1024) -> int:
    """How many evaluation fragments show exactly the view of a training tail."""
    keys = {ex.view_key for ex in train}
    return sum(Example("hdfs", SOURCE, "", view_of(s, SOURCE, max_prompt_tokens=max_prompt_tokens,
                                                      count_tokens=count_tokens), "normal", "").view_key in keys
               for s in eval_sessions)
