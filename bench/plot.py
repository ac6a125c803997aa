"""Draws ``bench/throughput_latency.png`` from the JSON figures the benchmarks wrote with ``--json`` into
``bench/results/`` (ingest.json, model_stage.json, cache.json, latency.json; a missing file leaves its panel empty).

Usage: ``.venv/bin/python bench/plot.py [--results bench/results] [--out bench/throughput_latency.png]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent


def _load(results: Path, name: str) -> dict | None:
    p = results / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _empty(ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--out", default=str(HERE / "throughput_latency.png"))
    args = ap.parse_args()
    results = Path(args.results)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (a1, a2), (a3, a4) = axes

    ing = _load(results, "ingest")
    if ing:
        names = [k for k in ("plain", "daemon", "parse", "faust-events", "faust-take") if k in ing["best"]]
        labels = {"plain": "aiokafka\ngetmany", "daemon": "daemon ingest\n+parse+sessionize", "parse": "getmany\n+parse",
                  "faust-events": "faust agent\nper event", "faust-take": "faust\ntake(5000)"}
        vals = [ing["best"][k] / 1000 for k in names]
        bars = a1.bar([labels[k] for k in names], vals, color=["#888", "#1f77b4", "#aec7e8", "#d62728", "#ff9896"][: len(names)])
        a1.bar_label(bars, fmt="%.0f")
        a1.set_ylabel("thousand lines/s")
        a1.set_title(f"Ingest, {ing['lines']:,} HDFS lines, {ing['partitions']} partitions "
                     f"(daemon/plain = {ing['ratio_daemon_plain']:.2f}, goal 0.8)")
    else:
        _empty(a1, "Ingest")

    ms = _load(results, "model_stage")
    if ms and ms.get("results"):
        r = ms["results"]
        names = [k for k in ("judge", "vllm", "transformers") if k in r]
        labels = {"judge": "rationad Judge\n(vLLM engine)", "vllm": "raw vllm\nLLM.generate", "transformers": "transformers\ngenerate"}
        bars = a2.bar([labels[k] for k in names], [r[k]["sessions_per_s"] for k in names],
                      color=["#1f77b4", "#888", "#2ca02c"][: len(names)])
        a2.bar_label(bars, fmt="%.2f")
        a2.set_ylabel("sessions/s (cache off)")
        ratio = r.get("ratio_judge_vllm")
        a2.set_title(f"Model stage, {r[names[0]]['sessions']} sessions, cache off"
                     + (f" (Judge/raw = {ratio:.2f}, goal 0.9)" if ratio else ""))
    else:
        _empty(a2, "Model stage")

    ca = _load(results, "cache")
    if ca:
        for key, label in (("stub", "rendered stream (3% anomalous)"), ("hdfs_2pct", "real HDFS 2% sample")):
            if key in ca:
                curve = ca[key]["curve"]
                a3.plot([c["sessions"] for c in curve], [c["calls_in_window"] * 1000 / c["window_sessions"] for c in curve],
                        marker=".", label=label)
        a3.axhline(20, color="r", ls="--", label="goal: 20")
        a3.set_yscale("log")
        a3.set_xlabel("sessions seen")
        a3.set_ylabel("model calls per 1,000 sessions (window)")
        a3.set_title("Verdict cache")
        a3.legend()
    else:
        _empty(a3, "Verdict cache")

    la = _load(results, "latency")
    if la and "miss" in la:
        groups = [("hit", 1.0), ("miss", 5.0)]
        xs = range(len(groups))
        p50 = [la[g]["p50"] or 0 for g, _ in groups if g in la]
        p99 = [la[g]["p99"] or 0 for g, _ in groups if g in la]
        w = 0.35
        b1 = a4.bar([x - w / 2 for x in xs][: len(p50)], p50, w, label="p50")
        b2 = a4.bar([x + w / 2 for x in xs][: len(p99)], p99, w, label="p99")
        a4.bar_label(b1, fmt="%.2f")
        a4.bar_label(b2, fmt="%.2f")
        for x, (g, goal) in zip(xs, groups, strict=True):
            a4.hlines(goal, x - 0.45, x + 0.45, colors="r", linestyles="--")
        names = {"hit": "cache hits", "miss": "cache misses"}
        a4.set_xticks(list(xs), [f"{names[g]}\n({la[g]['rate']:.2f} sessions/s)" if g in la else g for g, _ in groups])
        if la.get("miss", {}).get("share_within_goal") == 0.0 and (la["miss"]["p50"] or 0) >= 60:
            a4.text(1, 62, "all misses beyond the 60 s bucket", ha="center")
        a4.set_ylabel("seconds, session close -> event acknowledged")
        a4.set_title("Latency at half capacity (red: goal for p99)")
        a4.legend()
    else:
        _empty(a4, "Latency")
    m = (ing or ms or ca or la or {}).get("machine", {})
    fig.suptitle(f"rationad benchmarks on {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('ram_gib', '?')} GiB"
                 " (CPU shared with a training run)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
