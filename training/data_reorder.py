"""Training rows whose lines come in another order (issue 16, item 5): a walk must read each row's template.

A session's view lists its templates in the order of their first lines. On the most common views, which are most of
the training rows, that order hardly varies (receive starts, allocation, acknowledgements, receipts, registrations),
and 0.3.2 learned it: on the test split's unseen sequences half its rationales were unfaithful, most of them a walk
that names the common order's roles where the session has another ("L3 x3 acknowledged, L4 x3 received" for a
session whose L3 is the receipt; 41 of its 138 unfaithful rationales swap those two roles). Loghub's blocks show
such orders: two DataNodes answer in either order.

These rows take a common training view and move one template's first line before the template above it (an adjacent
swap of two rows), so the same templates stand at other positions. The start of a write stays where it was (neither
row of a swap is a receive start or the allocation): what follows it (acknowledgements, receipts, registrations,
routine lines, errors) comes from several machines, in either order. A block's lines are the same lines in another
order, so its label stays; the knowledge base reads a session by its counts, not its order, and a variant it does not
explain under that label (``Rationale.explained``) is left out all the same. No variant has the template order of a
validation or test view, whatever its counts: the evaluation's unseen sequences stay unseen, and the measure of this
lever is not a measure of orders it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable

from rationad.prompt import approx_tokens, view_of
from rationad.records import Session
from rationad.templates import to_template

from training.data_fragments import _hdfs_with_sessions, _majority
from training.data_hdfs import SOURCE
from training.example import Example
from training.knowledge import match_hdfs
from training.rationales import hdfs_rationale
from training.splits import unit

MIN_ROWS = 3  # a view of fewer templates has no swap that keeps a lifecycle to walk
FIXED_ROLES = ("write_start", "allocate")  # rows that open a write: never swapped


def template_order(view) -> tuple[str, ...]:
    """A view's templates in the order it shows them, counts left out: the key of ``held_out``."""
    return tuple(r.template for r in view.rows)


def reordered_examples(examples: list[Example], max_views: int, per_view: int, held_out: set[tuple[str, ...]], *,
                       count_tokens: Callable[[str], int] = approx_tokens,
                       max_prompt_tokens: int = 1024) -> list[Example]:
    """Up to ``per_view`` adjacent-swap variants of each of the ``max_views`` most common HDFS views of ``examples``
    (which must carry their ``session``), one per distinct new view, none of whose template orders
    (``template_order``) is in ``held_out``."""
    from training.evaluate import views_by_traffic

    if per_view < 1:
        raise ValueError(f"[data] hdfs_reorder_each must be at least 1 (got {per_view}); hdfs_reordered = 0 makes none")
    groups, keys = views_by_traffic(_hdfs_with_sessions(examples))
    seen = set(groups)
    out: dict[str, Example] = {}
    for k in keys[:max_views]:
        s: Session = groups[k][0].extra["session"]
        label = _majority(groups[k])
        templates = [to_template(line.message) for line in s.lines]  # once per session, not once per swap
        order = list(dict.fromkeys(templates))
        if len(order) < MIN_ROWS:
            continue
        fixed = [_opens_write(tpl) for tpl in order]
        swaps = sorted((i for i in range(len(order) - 1) if not (fixed[i] or fixed[i + 1])),
                       key=lambda i: unit(f"{k}:{i}", "swap"))
        made = 0
        for i in swaps:
            if made == per_view:
                break
            rank = {tpl: n for n, tpl in enumerate(order[:i] + [order[i + 1], order[i]] + order[i + 2:])}
            # stable: each row's lines keep their order
            lines = [s.lines[j] for j in sorted(range(len(s.lines)), key=lambda j: rank[templates[j]])]
            moved = Session(key=s.key, lines=lines, close_reason=s.close_reason, topic=s.topic, label=label,
                            source_id=f"{s.source_id or s.key}#swap{i}")
            view = view_of(moved, SOURCE, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens)
            ex = Example("hdfs", SOURCE, str(moved.source_id), view, label, "reordered",
                         {"lines": len(lines), "reordered": i})
            if ex.view_key in seen or template_order(view) in held_out or ex.view_key in out:
                continue
            if not hdfs_rationale(view, label).explained:
                continue
            out[ex.view_key] = ex
            made += 1
    return list(out.values())


def _opens_write(template: str) -> bool:
    t = match_hdfs(template)
    return t is not None and t.role in FIXED_ROLES
