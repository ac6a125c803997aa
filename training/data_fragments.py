"""Training rows of the shapes the daemon cuts a block's lifecycle into (issue 16, item 5): tails.

A gap or span bound closes a block's window mid-lifecycle; what follows is judged as its own session: the tail of a
write, with receipts and registrations but fewer (or no) starts. The released model was trained on whole lifecycles
only and on such tails walks rows by the roles a whole lifecycle has (HDFS fragments set: 7 of 30 tails faithful).

Tails are cut at a third and at two thirds of a view's lines (the evaluation's ``HDFS fragments`` set cuts at half,
so most of its tails are not training rows; ``overlap`` says how many are). A tail keeps its block's label only where
the knowledge base reads that label in the tail's own lines (``Rationale.explained``): the tail of a block that failed
in its first lines shows no failure, and a rationale that called it anomalous would have to invent a reason. Heads
(a window closed early by ``max_lines`` or ``max_open``) are left out: the knowledge base reads two starts without a
completion as a failed write, while a window closed by ``max_open`` is a write in progress, and the prompt does not
say why a window closed.
"""

from __future__ import annotations

from collections.abc import Callable

from rationad.prompt import approx_tokens, view_of
from rationad.records import Session

from training.data_hdfs import SOURCE
from training.example import Example
from training.rationales import hdfs_rationale

CUTS = (1 / 3, 2 / 3)  # where a tail starts, as a share of the lifecycle's lines
MIN_LINES = 4


def tail_examples(examples: list[Example], max_views: int, *, count_tokens: Callable[[str], int] = approx_tokens,
                  max_prompt_tokens: int = 1024) -> list[Example]:
    """Tails of the ``max_views`` most common HDFS views of at least ``MIN_LINES`` lines (examples must carry their
    ``session``), one per distinct tail view, each explained by the knowledge base under its block's label."""
    from training.evaluate import views_by_traffic

    hdfs = [ex for ex in examples if ex.task == "hdfs" and ex.extra["lines"] >= MIN_LINES]
    missing = [ex.sid for ex in hdfs if "session" not in ex.extra]
    if missing:
        raise ValueError(f"tail_examples needs the sessions (load_corpus keep_sessions): {missing[0]} has none")
    groups, keys = views_by_traffic(hdfs)
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
