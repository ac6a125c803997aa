"""One training/evaluation example: a session's view (exactly what the daemon shows the model) and its label."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from rationad.prompt import SessionView, user_message


@dataclass(slots=True)
class Example:
    task: str  # "hdfs" (block sessions), "bgl" / "spirit" (templates), "bgl-window"
    source: str  # the log source name shown to the model
    sid: str  # the session's own id in its dataset
    view: SessionView
    label: str  # "normal" | "anomalous"
    origin: str  # which dataset file it came from
    extra: dict = field(default_factory=dict)

    @property
    def view_key(self) -> str:
        """Identity of what the model sees: equal views get equal prompts (and equal verdicts at temperature 0).

        Labelled neighbours are left out: they follow from the template, and runs with and without them must select,
        split and order the same examples."""
        return hashlib.sha256(user_message(replace(self.view, neighbours=())).encode()).hexdigest()[:20]


def content_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
