"""SFT rows from operator labels (``rationad label``), so that corrections also reach the next model.

    python -m training.operator_rows --config config.toml --out build/training/operator.jsonl

Each label becomes one row of the template-level task in the format of ``training.dataset.sft_rows``: the prompt is
the one the daemon serves for the template (``rationad.prompt.build_view(source, [template], templated=True)`` and
``build_messages``, the view ``training.data_templates`` builds), the completion is ``format_completion`` of the
operator's reason, cleaned to the rationale contract (no ``<``/``>``, only ``L1`` cited, at most ``THINK_MAX_CHARS``
characters), and the label. The source shown to the model is the daemon's (``input.dialect``). Rows have the task
``operator``, so ``training.focus --new operator`` trains on them with a replay sample of the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rationad.answer import parse_completion
from rationad.facts import rule_evidence
from rationad.labels import Label
from rationad.prompt import (
    THINK_MAX_CHARS,
    SessionView,
    TokenCounter,
    approx_tokens,
    build_messages,
    build_view,
    format_completion,
    user_message,
)

TASK = "operator"
_TAILS = {"anomalous": "This signals trouble: anomalous.", "normal": "Nothing signals trouble: normal."}
_REF = re.compile(r"\bL(\d{1,4})\b")


def _other_ref(m: re.Match[str]) -> str:
    """A citation of a row the one-template view does not have reads as plain text (``line 3``)."""
    return m.group(0) if int(m.group(1)) == 1 else f"line {m.group(1)}"


def operator_think(view: SessionView, label: Label) -> str:
    """The ``<think>`` text of a label: the template's rule sentence, as every template analysis starts and as the
    daemon writes it for a model trained with it (``rationad.facts.rule_evidence``), then ``L1:`` and the operator's
    reason (cut with ``...`` if needed), then the conclusion the template rationales use
    (``training.rationales.template_rationale``)."""
    ref = view.rows[0].ref
    facts = (rule_evidence(view) or "<think>").removeprefix("<think>")
    tail = _TAILS[label.verdict]
    reason = " ".join(_REF.sub(_other_ref, label.reason.replace("<", " ").replace(">", " ")).split())
    if reason and reason[-1] not in ".!?":
        reason += "."
    room = THINK_MAX_CHARS - len(f"{facts} {ref}:  {tail}")
    if len(reason) > room:
        reason = reason[: room - 3].rstrip() + "..."
    return f"{facts} {ref}: {reason} {tail}" if reason else f"{facts} {tail}"


def operator_rows(labels: Sequence[Label], source: str, *, max_prompt_tokens: int = 1024,
                  count_tokens: TokenCounter = approx_tokens) -> list[dict]:
    """One SFT row per label, ordered by template id (deterministic); ``source`` is the log source name the daemon
    shows the model (its ``input.dialect``)."""
    rows = []
    for label in sorted(labels, key=lambda lb: lb.id):
        view = build_view(source, [label.template], templated=True, max_prompt_tokens=max_prompt_tokens,
                          count_tokens=count_tokens)
        think = operator_think(view, label)
        completion = format_completion(think, label.verdict)
        parsed = parse_completion(completion, view)
        if not parsed.ok or parsed.verdict != label.verdict or parsed.ungrounded_refs or len(think) > THINK_MAX_CHARS:
            raise AssertionError(f"bad operator rationale for {label.id}: {parsed.error or parsed.ungrounded_refs}")
        rows.append({"prompt": build_messages(view),
                     "completion": [{"role": "assistant", "content": completion}],
                     "label": label.verdict, "task": TASK, "reference": think, "session": user_message(view),
                     "n_refs": len(view.rows), "injected": False, "fragment": ""})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.operator_rows", description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="the daemon's TOML config: its broker, judge.labels_topic and input.dialect "
                                     "(default: ./config.toml if present)")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file to write the rows to")
    ap.add_argument("--source", help="log source name shown to the model (default: the config's input.dialect)")
    ap.add_argument("--max-prompt-tokens", type=int, default=1024, help="prompt budget of the view (as in training)")
    a = ap.parse_args(argv)

    from rationad.cli import DEFAULT_CONFIG
    from rationad.config import ConfigError, load_settings
    from rationad.labels import read_labels
    from training.dataset import write_jsonl

    config = a.config if a.config is not None else (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    labels = asyncio.run(read_labels(settings.kafka, settings.judge.labels_topic))
    rows = operator_rows(labels, a.source or settings.input.dialect, max_prompt_tokens=a.max_prompt_tokens)
    write_jsonl(rows, a.out)
    counts = Counter(r["label"] for r in rows)
    print(f"[operator_rows] {len(rows)} rows from {settings.judge.labels_topic!r}: {dict(sorted(counts.items()))}",
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
