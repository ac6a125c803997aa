"""Labelled neighbours for template-level judging: the templates most like the one judged, with known labels.

A model trained with neighbours ships their index beside its weights: ``neighbours.json``, named in its
``manifest.json`` (``neighbours``: file, bytes, sha256, entries, k). The judge quotes the ``k`` nearest entries after a
template's row (``rationad.prompt.Neighbour``), as data like every log line, each with its label and a one-line
reason. The index is pure Python: templates are compared as sets of lowercase word tokens (masked variables and
numbers dropped), by Jaccard similarity through an inverted index, so a query costs a few hundred set operations and
the daemon needs no new dependency. Ties go to the earlier entry, so a query's answer is deterministic.

A model whose manifest names an index refuses to start without it: a missing, corrupt or altered file is an
``NeighbourIndexError`` naming the file, never a silent fallback to prompts the model was not trained on.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from rationad.config import ConfigError
from rationad.injection import mask
from rationad.prompt import VERDICTS, Neighbour

FORMAT = "rationad-neighbours-v1"
INDEX_FILE = "neighbours.json"
TEMPLATE_MAX_CHARS = 160  # a neighbour is evidence, not the subject: its text is cut shorter than a row's
REASON_MAX_CHARS = 100

_TOKEN = re.compile(r"[a-z][a-z0-9_]*")
_MASK = re.compile(r"\{\*\}|<\*>")


class NeighbourIndexError(ConfigError, ValueError):
    """A neighbour index that cannot be used (missing, corrupt, altered); the message names the file. A
    ``ConfigError``: ``rationad run`` and ``check-config`` report it at start-up (exit status 2)."""


def tokens(template: str) -> frozenset[str]:
    """The words a template is compared by: lowercase, masked variables removed, tokens that start with a letter."""
    return frozenset(_TOKEN.findall(_MASK.sub(" ", template.lower())))


@dataclass(frozen=True, slots=True)
class Known:
    """A template with a known label: from the training data shipped with the model, or an operator's label."""

    template: str
    label: str
    reason: str
    source: str = ""

    def __post_init__(self) -> None:
        if self.label not in VERDICTS:
            raise ValueError(f"label must be one of {VERDICTS}, got {self.label!r}")
        if not isinstance(self.template, str) or not self.template or not isinstance(self.reason, str):
            raise ValueError("template must be a non-empty string and reason a string")


class NeighbourIndex:
    def __init__(self, entries: Iterable[Known]) -> None:
        self.entries: list[Known] = []
        self._tokens: list[frozenset[str]] = []
        self._postings: dict[str, list[int]] = defaultdict(list)
        self._by_template: dict[str, int] = {}
        for e in entries:
            self.put(e)

    def __len__(self) -> int:
        return len(self._by_template)

    def put(self, entry: Known) -> None:
        """Add ``entry``; a template already present takes the new label and reason (an operator's correction)."""
        at = self._by_template.get(entry.template)
        if at is not None:
            self.entries[at] = entry
            return
        at = len(self.entries)
        self.entries.append(entry)
        toks = tokens(entry.template)
        self._tokens.append(toks)
        self._by_template[entry.template] = at
        for t in toks:
            self._postings[t].append(at)

    def nearest(self, template: str, k: int, *, exclude_self: bool = False) -> list[tuple[Known, float]]:
        """The ``k`` most similar entries sharing at least one word, with their similarity, best first.

        ``exclude_self`` leaves out an entry with exactly this template (training: a template must not be shown its
        own label)."""
        if k <= 0:
            return []
        q = tokens(template)
        shared: dict[int, int] = defaultdict(int)
        for t in q:
            for i in self._postings.get(t, ()):
                shared[i] += 1
        scored = []
        for i, n in shared.items():
            e = self.entries[i]
            if exclude_self and e.template == template:
                continue
            scored.append((n / (len(q) + len(self._tokens[i]) - n), -i))  # -i: ties to the earlier entry
        scored.sort(reverse=True)
        return [(self.entries[-neg], round(sim, 4)) for sim, neg in scored[:k]]

    def neighbours(self, template: str, k: int, *, exclude_self: bool = False) -> tuple[Neighbour, ...]:
        """What the prompt shows: ``N1``.. with label, cut template and reason."""
        return shown(e for e, _ in self.nearest(template, k, exclude_self=exclude_self))

    def dumps(self) -> bytes:
        return orjson.dumps({"format": FORMAT, "entries": [
            {"template": e.template, "label": e.label, "reason": e.reason, "source": e.source} for e in self.entries
        ]})

    def save(self, path: Path) -> dict:
        """Write the index; returns what a manifest records of it (file, bytes, sha256, entries)."""
        data = self.dumps()
        path.write_bytes(data)
        return {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "entries": len(self)}

    @classmethod
    def load(cls, path: Path, sha256: str | None = None) -> NeighbourIndex:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise NeighbourIndexError(f"neighbour index {path}: cannot read it ({exc.strerror})") from None
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise NeighbourIndexError(f"neighbour index {path}: sha256 differs from the model's manifest "
                                      "(altered or from another model)")
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise NeighbourIndexError(f"neighbour index {path}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("entries"), list):
            raise NeighbourIndexError(f"neighbour index {path}: expected an object with format {FORMAT!r} and a list "
                                      "of entries")
        out = []
        for n, e in enumerate(doc["entries"], start=1):
            try:
                out.append(Known(e["template"], e["label"], e["reason"], str(e.get("source", ""))))
            except (KeyError, TypeError, ValueError) as exc:
                raise NeighbourIndexError(f"neighbour index {path}: entry {n} is not a labelled template "
                                          f"({exc})") from None
        return cls(out)


def shown(entries: Iterable[Known]) -> tuple[Neighbour, ...]:
    """Entries as the prompt shows them: ``N1``, ``N2``.. with label, cut template and cut reason. A template is
    masked before it is cut (as a row is, ``prompt._cut_row``): cut first, text addressed to the model that ran past
    the cut was no span any more and its start was shown ("..., answer norma")."""
    return tuple(Neighbour(f"N{n}", mask(e.template)[:TEMPLATE_MAX_CHARS], e.label, e.reason[:REASON_MAX_CHARS])
                 for n, e in enumerate(entries, start=1))


@dataclass(slots=True)
class ModelNeighbours:
    """The index a model was trained with, how many neighbours its prompts carry, and the operators' labels.

    An operator's label (``rationad label``) is a known template too: it joins the candidates (and replaces a
    shipped entry of the same template) until it is cleared, so a correction also informs similar templates."""

    index: NeighbourIndex
    k: int
    path: Path
    _operator: dict[str, Known] = field(default_factory=dict)  # template id -> the operator's label
    _overlay: NeighbourIndex | None = None
    _stale: bool = False  # the labels changed since the overlay was built

    def set_operator(self, tid: str, entry: Known | None) -> None:
        """An operator's label for template ``tid`` (None: cleared). The overlay index is rebuilt at the next query,
        once, not per label: rebuilding it per label made loading N labels at start O(N^2) (80 s for 3,000, the
        event loop blocked)."""
        if entry is None:
            self._operator.pop(tid, None)
        else:
            self._operator[tid] = entry
        self._stale = True

    def _operators(self) -> NeighbourIndex | None:
        if self._stale:
            # in the templates' order, not the labels' arrival: ties go to the earlier entry, and arrival differs
            # between replicas and restarts (which labels partition came first, what compaction kept)
            self._overlay = NeighbourIndex(sorted(self._operator.values(), key=lambda e: e.template)) \
                if self._operator else None
            self._stale = False
        return self._overlay

    def query(self, template: str, own: str | None = None) -> tuple[Neighbour, ...]:
        """The ``k`` nearest known templates: shipped and operator-labelled, the operator's first on equal
        similarity; a shipped entry an operator relabelled appears with the operator's label only. Not the label
        of ``template`` itself: a labelled template is never judged, and the model's verdict shown beside its label is
        looked up in the verdict cache under the prompt it was judged with, before the label (review 2026-12-07: its
        own label changed the prompt, and the lookup never found it). ``own``: the template's whole text, where
        ``template`` is its row as the prompt shows it (cut to fit, masked)."""
        overlay = self._operators()
        if overlay is None:
            return self.index.neighbours(template, self.k)
        own = template if own is None else own
        relabelled = {e.template for e in self._operator.values()} - {own}
        shipped = [(sim, 0, n, e) for n, (e, sim) in enumerate(self.index.nearest(template, self.k + len(relabelled)))
                   if e.template not in relabelled]
        near = [(e, sim) for e, sim in overlay.nearest(template, self.k + 1) if e.template != own]
        ours = [(sim, 1, -n, e) for n, (e, sim) in enumerate(near[: self.k])]
        best = sorted(shipped + ours, key=lambda t: (-t[0], -t[1], abs(t[2])))[: self.k]
        return shown(e for *_, e in best)


def for_model(folders: Iterable[Path | None]) -> ModelNeighbours | None:
    """The neighbour index named by the first ``manifest.json`` found in ``folders`` (adapter, then model), or None
    when that manifest names none (a model trained without neighbours)."""
    for folder in folders:
        if folder is None or not (Path(folder) / "manifest.json").is_file():
            continue
        manifest_path = Path(folder) / "manifest.json"
        try:
            manifest = orjson.loads(manifest_path.read_bytes())
        except orjson.JSONDecodeError as exc:  # it may name an index: the model is not served without it
            raise NeighbourIndexError(f"{manifest_path}: not valid JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise NeighbourIndexError(f"{manifest_path}: not a JSON object")
        spec = manifest.get("neighbours")
        if not spec:
            return None
        if not isinstance(spec, dict) or not isinstance(spec.get("file"), str) or not isinstance(spec.get("k"), int):
            raise NeighbourIndexError(f"{manifest_path}: 'neighbours' must name a file and k")
        path = Path(folder) / spec["file"]
        return ModelNeighbours(NeighbourIndex.load(path, spec.get("sha256")), spec["k"], path)
    return None
