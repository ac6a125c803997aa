"""The corpus (all examples, split) and the chat-formatted SFT / GRPO rows built from it.

Rows are TRL's conversational prompt-completion format: ``prompt`` = ``rationad.prompt.build_messages(view)`` (the
served prompt), ``completion`` = the assistant turn ``format_completion(think, verdict)``; so the loss is on the
completion only. Training rows are deduplicated by view (many sessions share one view), balanced and, for the rare
template anomalies, upsampled. Everything is deterministic (ordered by content hash).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
import os
from pathlib import Path

from rationad.neighbours import NeighbourIndex
from rationad.prompt import approx_tokens, build_messages, user_message
from rationad.template_rules import match_rule

from training.example import Example
from training.rationales import agreement_report, build, failure_kind
from training.splits import report, split_examples, unit


# ../shared/datasets beside the repository (as in CI), or $RATIONAD_SHARED/datasets.
DEFAULT_DATASETS = Path(os.environ.get("RATIONAD_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "datasets"


@dataclass(slots=True)
class DataConfig:
    datasets: Path = DEFAULT_DATASETS
    hdfs_rendered_limit: int | None = None  # sessions of hdfs_sessions.jsonl (None = all)
    use_hdfs_raw: bool = True
    injection_share: float = 0.15  # share of HDFS training views also given as injection-hardening copies
    other_systems: bool = True  # training windows of LogLM's other systems (training.data_other), train split only
    # The same systems' distinct templates in the template prompt of source generic (``other_system_templates``): how
    # the daemon judges a system without a dialect; train split only; False = none (0.3.0's recipe)
    other_templates: bool = False
    render_seed: int = 0
    hdfs_normal_views: int = 220  # training rows per task and label (distinct views)
    hdfs_anomalous_views: int = 300
    template_normal: int = 180  # per template dataset (bgl, spirit)
    template_anomalous_upsample: int = 2
    # Normal templates a trouble rule matches ("caught ...Exception" while reading a fan) are taken first of the
    # ``template_normal``: the rows that teach which trouble words are routine on a system (0.3.1 flagged such
    # templates and the network words of a system it never saw; RESULTS.md). False: content-hash order alone.
    template_trouble_first: bool = False
    max_prompt_tokens: int = 1024
    neighbours: int = 0  # template prompts carry the k nearest labelled training templates (training.neighbour_index)
    hdfs_tails: int = 0  # tails of the most common HDFS training views (training.data_fragments); 0 = none
    hdfs_heads: int = 0  # unfinished heads of the most common HDFS training views (prompt says unfinished); 0 = none
    # Adjacent-swap variants of the most common HDFS training views (training.data_reorder), ``hdfs_reorder_each``
    # per view: a walk must read each row's template, not its position; 0 = none
    hdfs_reordered: int = 0
    hdfs_reorder_each: int = 2
    # At least this many anomalous HDFS views of every failure kind the knowledge base names (``failure_kind``), then
    # the most frequent: frequency alone leaves rare kinds out (``cover_kinds``); 0 = frequency alone (0.3.0's recipe)
    hdfs_min_per_failure: int = 0
    extra: dict = field(default_factory=dict)


@dataclass(slots=True)
class Corpus:
    splits: dict[str, list[Example]]
    reports: list[str]
    neighbours: NeighbourIndex | None = None  # the index template prompts were given (DataConfig.neighbours > 0)

    def hash(self) -> str:
        h = hashlib.sha256()
        for s in ("train", "val", "test"):
            for ex in self.splits[s]:
                h.update(f"{s}\x1f{ex.task}\x1f{ex.sid}\x1f{ex.view_key}\x1f{ex.label}\n".encode())
        return h.hexdigest()[:16]


def load_corpus(cfg: DataConfig, count_tokens: Callable[[str], int] = approx_tokens) -> Corpus:
    from training.data_hdfs import load_raw, load_rendered
    from training.data_templates import load_templates

    d = cfg.datasets
    keep = bool(cfg.extra.get("keep_sessions")) or max(cfg.hdfs_tails, cfg.hdfs_heads, cfg.hdfs_reordered) > 0
    reports = []
    examples = load_rendered(d / "hdfs_sessions/hdfs_sessions.jsonl", seed=cfg.render_seed,
                             limit=cfg.hdfs_rendered_limit, count_tokens=count_tokens,
                             max_prompt_tokens=cfg.max_prompt_tokens, keep_sessions=keep)
    if cfg.use_hdfs_raw:
        examples += load_raw(d / "hdfs_2pct/HDFS_2pct_dev.log.gz", d / "hdfs_2pct/anomaly_label_dev.csv",
                             count_tokens=count_tokens, max_prompt_tokens=cfg.max_prompt_tokens, keep_sessions=keep)
    for name in ("bgl", "spirit"):
        ex, rep = load_templates(d / f"templates/{name}_templates_dev.csv", d / "rationanomaly/anomaly_patch.json", name)
        reports.append("label correction: " + rep.text())
        examples += ex
    splits = split_examples(examples)
    index = None
    if cfg.neighbours > 0:
        from training.neighbour_index import attach, build_index

        index = build_index(splits["train"])
        attach(splits, index, cfg.neighbours)
        reports.append(f"labelled neighbours: the {cfg.neighbours} nearest of {len(index)} training templates in "
                       "every template prompt")
    if cfg.other_systems:
        from training.data_other import other_system_examples

        other = other_system_examples(d / "loglm/Instruction_Dataset_of_LogLM.json", count_tokens=count_tokens,
                                      max_prompt_tokens=cfg.max_prompt_tokens)
        splits["train"] += other  # training only: the unseen-system evaluation uses Proxifier, held out here
        reports.append(f"other systems (Hadoop, Zookeeper, HPC, Linux of LogLM's parsing data): {len(other)} windows "
                       f"of 10 lines, {sum(e.label == 'anomalous' for e in other)} with a line reporting trouble")
    if cfg.other_templates:
        from training.data_other import other_system_templates

        tpl = other_system_templates(d / "loglm/Instruction_Dataset_of_LogLM.json", count_tokens=count_tokens,
                                     max_prompt_tokens=cfg.max_prompt_tokens)
        splits["train"] += tpl
        reports.append(f"other systems by template: {len(tpl)} distinct templates in the generic template "
                       f"prompt, {sum(e.label == 'anomalous' for e in tpl)} reporting trouble")
    reports.append(report(splits))
    return Corpus(splits, reports, index)


def distinct_views(examples: list[Example]) -> list[tuple[Example, int, str]]:
    """(representative, sessions, majority label) per distinct view, in content-hash order."""
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.view_key].append(ex)
    out = []
    for key in sorted(groups, key=lambda k: unit(k, "order")):
        g = groups[key]
        label = Counter(e.label for e in g).most_common(1)[0][0]
        out.append((g[0], len(g), label))
    return out


def select_sft(train: list[Example], cfg: DataConfig) -> list[Example]:
    """Balanced, deduplicated training examples (label of a view = the majority label of its sessions).

    HDFS views are taken most frequent first (ties in content-hash order): a few sequences carry most of the
    traffic, so the cap never leaves out the views the daemon sees most often.
    """
    picked: list[Example] = []
    by_task: dict[str, list[tuple[Example, int, str]]] = defaultdict(list)
    for rep, n, label in distinct_views(train):
        by_task[rep.task].append((rep, n, label))
    for task, rows in by_task.items():
        for label in ("normal", "anomalous"):
            mine = [Example(r.task, r.source, r.sid, r.view, lab, r.origin, r.extra) for r, _, lab in rows if lab == label]
            if task == "hdfs":
                cap = cfg.hdfs_normal_views if label == "normal" else cfg.hdfs_anomalous_views
                counts = [n for _, n, lab in rows if lab == label]
                by_freq = [ex for _, ex in sorted(zip(counts, mine), key=lambda t: -t[0])]  # stable: hash order
                if label == "anomalous" and cfg.hdfs_min_per_failure:
                    by_freq = cover_kinds(by_freq, cap, cfg.hdfs_min_per_failure, lambda ex: failure_kind(ex.view))
                picked += by_freq[:cap]
            elif label == "normal":
                if cfg.template_trouble_first:
                    mine = sorted(mine, key=lambda ex: not _rule_signals_trouble(ex))  # stable: hash order
                picked += mine[: cfg.template_normal]
            else:
                picked += mine * cfg.template_anomalous_upsample
    return sorted(picked, key=lambda e: unit(e.view_key + e.sid, "shuffle"))


def _rule_signals_trouble(ex: Example) -> bool:
    rule, _ = match_rule(ex.view.rows[0].template)
    return rule is not None and rule.verdict == "anomalous"


def cover_kinds(ranked: list[Example], cap: int, minimum: int, kind: Callable[[Example], str]) -> list[Example]:
    """``cap`` of ``ranked`` (best first): the first ``minimum`` of every kind, then the best of the rest, in rank
    order. Where the minima alone exceed ``cap`` the best ranked of them are kept."""
    taken: Counter[str] = Counter()
    first: list[int] = []
    rest: list[int] = []
    for i, ex in enumerate(ranked):
        k = kind(ex)
        (first if taken[k] < minimum else rest).append(i)
        taken[k] += 1
    return [ranked[i] for i in sorted((first + rest)[:cap])]


def failure_kinds(examples: list[Example]) -> dict[str, int]:
    """Anomalous HDFS training rows per failure kind (the data report: what the model is taught to recognise)."""
    return dict(Counter(failure_kind(ex.view) for ex in examples
                        if ex.task == "hdfs" and ex.label == "anomalous").most_common())


def sft_rows(examples: list[Example]) -> tuple[list[dict], dict]:
    """Prompt-completion rows and the rationale agreement report."""
    rationales = [build(ex) for ex in examples]
    rows = [
        {"prompt": build_messages(ex.view),
         "completion": [{"role": "assistant", "content": r.completion}],
         "label": ex.label, "task": ex.task, "reference": r.think, "session": user_message(ex.view),
         "n_refs": len(ex.view.rows), "injected": bool(ex.extra.get("injected_refs")),
         "fragment": ex.extra.get("fragment", "")}
        for ex, r in zip(examples, rationales, strict=True)
    ]
    return rows, agreement_report(examples, rationales)


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a ``ValueError`` naming the file and line for a line that is not JSON (a file
    cut mid-write gave a bare ``JSONDecodeError``)."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path}, line {n}: not JSON ({exc}): cut while it was written, or altered; rerun "
                                 "the stage that writes it") from exc
    return rows
