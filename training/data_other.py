"""Windows of log systems that are neither the served HDFS / BGL / Spirit nor the held-out unseen system.

LogLM's parsing task (``loglm/Instruction_Dataset_of_LogLM.json``) holds 200 lines of each of seven Loghub
systems, in order: HDFS, Hadoop, Zookeeper, BGL, HPC, Linux, Proxifier. HDFS and BGL are trained from their own
datasets and Proxifier is the unseen system of evaluation, so the other four become training windows of source
``generic``: a model that has seen only HDFS would apply write-pipeline reasoning to any log (Proxifier's byte
counts read as "4 receives, 3 completions") and flag half the windows of a healthy new system.

The rule is the one of the unseen-system evaluation (``training.data_bgl.TROUBLE``): a window is normal when no
line reports an error, a failure, a timeout or a refused connection. Normal windows are consecutive clean lines;
an anomalous window is a normal one with one line replaced by a line of the same system that reports trouble, so
the model learns to flag a new system on what its lines say, not on its source name.
"""

from __future__ import annotations

from pathlib import Path

from rationad.prompt import TokenCounter, approx_tokens, build_view
from rationad.template_book import template_of

from training.data_bgl import PROXIFIER, TROUBLE, parsing_lines
from training.example import Example, content_hash
from training.splits import unit

# (first item, end) of each system's block among the parsing items, and whether its trouble lines are real
# trouble (Hadoop's only match is the setting "maxTaskFailuresPerNode is 3").
SYSTEMS = {"hadoop": (200, 400, False), "zookeeper": (400, 600, True), "hpc": (800, 1000, True),
           "linux": (1000, 1200, True)}
WINDOW = 10


def system_lines(loglm_path: Path) -> dict[str, list[str]]:
    """Lines per system; raises if the file's layout is not the one ``SYSTEMS`` describes."""
    lines = parsing_lines(loglm_path)
    if len(lines) != 1400:
        raise ValueError(f"{loglm_path}: expected 1400 log parsing items (7 systems x 200), found {len(lines)}")
    out = {name: lines[a:b] for name, (a, b, _) in SYSTEMS.items()}
    for name, block in out.items():
        bad = [ln for ln in block if PROXIFIER.search(ln) or "blk_" in ln]
        if bad:
            raise ValueError(f"{loglm_path}: the {name} block holds HDFS or Proxifier lines, e.g. {bad[0]!r}")
    return out


def other_system_examples(loglm_path: Path, *, count_tokens: TokenCounter = approx_tokens,
                          max_prompt_tokens: int = 1024) -> list[Example]:
    """Normal windows of ``WINDOW`` clean lines, and for every second one an anomalous twin (one line replaced)."""
    out: list[Example] = []
    for name, lines in system_lines(loglm_path).items():
        clean = [ln for ln in lines if not TROUBLE.search(ln)]
        trouble = sorted({ln for ln in lines if TROUBLE.search(ln)}) if SYSTEMS[name][2] else []
        for w, i in enumerate(range(0, len(clean) - WINDOW + 1, WINDOW)):
            chunk = clean[i : i + WINDOW]
            sid = f"{name}-{w + 1}"
            out.append(_example(sid, chunk, "normal", None, count_tokens, max_prompt_tokens, loglm_path))
            if trouble and w % 2 == 0:
                bad = trouble[int(unit(sid, "trouble-line") * len(trouble))]
                pos = int(unit(sid, "trouble-pos") * WINDOW)
                twin = [*chunk[:pos], bad, *chunk[pos + 1 :]]
                out.append(_example(sid + "-trouble", twin, "anomalous", pos, count_tokens, max_prompt_tokens,
                                    loglm_path))
    return out


TEMPLATES_PER_SYSTEM = 40  # Hadoop's lines give 131 templates, most one task id apart: a cap keeps systems even


def other_system_templates(loglm_path: Path, *, count_tokens: TokenCounter = approx_tokens,
                           max_prompt_tokens: int = 1024) -> list[Example]:
    """Distinct templates of the four systems' lines (``template_of``; up to ``TEMPLATES_PER_SYSTEM`` each, in hash
    order) in the template prompt of source ``generic``, as the daemon judges a system without a dialect (``judge.level
    = "template"``). Labelled by the windows' rule: anomalous when it reports trouble on a system whose trouble is
    real. Without these rows the template prompt is only ever BGL's and Spirit's in training, and a model may read a
    new system's routine templates as trouble (0.3.0 flagged all 20 normal Proxifier windows: training/RESULTS.md)."""
    out: list[Example] = []
    for name, lines in system_lines(loglm_path).items():
        real = SYSTEMS[name][2]
        distinct = sorted({template_of(ln) for ln in lines}, key=lambda t: unit(t, "other-template"))
        for tpl in sorted(distinct[:TEMPLATES_PER_SYSTEM]):
            view = build_view("generic", [tpl], templated=True, max_prompt_tokens=max_prompt_tokens,
                              count_tokens=count_tokens)
            label = "anomalous" if real and TROUBLE.search(tpl) else "normal"
            out.append(Example("generic_template", "generic", f"{name}-template-{content_hash(tpl)[:12]}", view, label,
                               str(loglm_path), {"hash": content_hash(tpl), "template": tpl}))
    return out


def _example(sid: str, lines: list[str], label: str, trouble_index: int | None, count_tokens: TokenCounter,
             max_prompt_tokens: int, origin: Path) -> Example:
    view = build_view("generic", lines, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens)
    extra: dict = {"hash": content_hash(*lines)}
    if trouble_index is not None:
        row = next(r for r in view.rows if r.first_index == trouble_index)
        extra["trouble_ref"] = row.ref
    return Example("generic", "generic", sid, view, label, str(origin), extra)
