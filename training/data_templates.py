"""BGL and Spirit log templates (the paper's template-level task: one template, one verdict) as examples.

The expert corrections of ``rationanomaly/anomaly_patch.json`` are applied to the LogPrompt labels as a visible step
(``apply_patch``): it reports how many labels it changed and checks the result against the CSV's
``Label_RationAnomaly_rectified`` column. The view is built exactly as the daemon's template task builds it
(``rationad.replay.sessions_from_templates`` + ``Judge.view``: ``build_view(source, [from_loghub(t)], templated=True)``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from rationad.prompt import build_view
from rationad.templates import from_loghub

from training.example import Example

_LABELS = {"0": "normal", "1": "anomalous"}
_PATCH_LABELS = {"normal": "normal", "abnormal": "anomalous", "anomalous": "anomalous"}


@dataclass(frozen=True, slots=True)
class TemplateRow:
    template: str  # Loghub notation (<*>)
    original: str  # Label_LogPrompt
    rectified: str  # the CSV's Label_RationAnomaly_rectified column
    line: int  # 1-based line in the CSV


@dataclass(slots=True)
class PatchReport:
    file: str
    rows: int
    patch_records: int
    matched: int  # patch records whose template is in this file
    changed: int  # labels the patch changed
    to_anomalous: int
    to_normal: int
    disagree_with_column: list[str]  # templates where patched label != Label_RationAnomaly_rectified

    def text(self) -> str:
        return (f"{self.file}: {self.rows} templates; patch has {self.patch_records} records, {self.matched} match "
                f"templates here; changed {self.changed} labels ({self.to_anomalous} normal->anomalous, "
                f"{self.to_normal} anomalous->normal); disagreements with Label_RationAnomaly_rectified: "
                f"{len(self.disagree_with_column)}")


def read_templates(path: Path) -> list[TemplateRow]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = {"EventTemplate", "Label_LogPrompt", "Label_RationAnomaly_rectified"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ValueError(f"{path}:1: expected columns {sorted(need)}, got {reader.fieldnames}")
        rows = []
        for n, r in enumerate(reader, start=2):
            tpl = (r["EventTemplate"] or "").strip()
            if not tpl:
                raise ValueError(f"{path}:{n}: empty EventTemplate")
            if r["Label_LogPrompt"] not in _LABELS or r["Label_RationAnomaly_rectified"] not in _LABELS:
                raise ValueError(f"{path}:{n}: labels must be 0 or 1, got {r['Label_LogPrompt']!r}, "
                                 f"{r['Label_RationAnomaly_rectified']!r}")
            rows.append(TemplateRow(tpl, _LABELS[r["Label_LogPrompt"]], _LABELS[r["Label_RationAnomaly_rectified"]], n))
        return rows


def read_patch(path: Path) -> dict[str, tuple[str, str]]:
    """template text -> (original label, rectified label)."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    out = {}
    for n, rec in enumerate(records, start=1):
        try:
            out[rec["input"].strip()] = (_PATCH_LABELS[rec["label"]], _PATCH_LABELS[rec["rectified"]])
        except KeyError as exc:
            raise ValueError(f"{path}: record {n}: missing or unknown field/label {exc}") from None
    return out


def apply_patch(rows: list[TemplateRow], patch: dict[str, tuple[str, str]], file: str) -> tuple[list[str], PatchReport]:
    """The corrected labels (one per row) and what the correction did."""
    labels = []
    changed = to_a = to_n = matched = 0
    disagree = []
    seen_patch = set()
    for r in rows:
        label = r.original
        if r.template in patch:
            seen_patch.add(r.template)
            _, rectified = patch[r.template]
            if rectified != label:
                changed += 1
                to_a += rectified == "anomalous"
                to_n += rectified == "normal"
            label = rectified
        if label != r.rectified:
            disagree.append(r.template)
        labels.append(label)
    matched = len(seen_patch)
    return labels, PatchReport(file, len(rows), len(patch), matched, changed, to_a, to_n, disagree)


def load_templates(path: Path, patch_path: Path, source: str) -> tuple[list[Example], PatchReport]:
    """Examples with corrected labels; the report says what the correction changed."""
    rows = read_templates(path)
    labels, report = apply_patch(rows, read_patch(patch_path), str(path))
    out = []
    for r, label in zip(rows, labels, strict=True):
        view = build_view(source, [from_loghub(r.template)], templated=True)
        out.append(Example(source, source, f"{path.name}:{r.line}", view, label, str(path),
                           {"template": r.template, "original_label": r.original}))
    return out, report
