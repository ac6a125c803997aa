"""Write the demo's embedded sample of real HDFS logs: ``rationad/data/hdfs_sample.log.gz`` and
``rationad/data/hdfs_sample_labels.csv``.

Source: LogLead's 2% sample of Loghub HDFS_v1 (``HDFS_2pct_dev.log.gz`` + ``anomaly_label_dev.csv``). The sample is
every line of ``--blocks`` complete blocks, ``--anomalies`` of them anomalous, in the source's (chronological) order,
byte for byte. Blocks are chosen by the SHA-256 of ``seed:block id`` (deterministic, independent of Python's hash
and of the file order) among the blocks of the training pipeline's **test split** (``training.splits``, as the corpus
splits this file): no block of the sample was a training example, so the demo's precision and recall are measured on
held-out blocks (the leakage audit found 265 of the earlier sample's 400 in the training split). Their prompts may still
equal training rows: HDFS views repeat across blocks (a normal lifecycle is one view), as in the test split itself.
A line naming several blocks is kept only if all of its blocks are in the sample, so the sample never holds a fragment
of a block outside it (the dev file has no such line: its only multi-id lines name one block twice, ``Deleting block
blk_X file .../blk_X``).

    .venv/bin/python scripts/make_demo_sample.py [--source-dir /work/shared/datasets/hdfs_2pct]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "datasets" / "hdfs_2pct"
DATA = REPO / "rationad" / "data"
BLOCK = re.compile(rb"blk_-?\d+")


def test_blocks(source_dir: Path) -> set[str]:
    """The block ids of the source that the training pipeline's corpus puts in its test split."""
    sys.path.insert(0, str(REPO))
    from training.data_hdfs import block_splits

    return {b for b, (split, _) in block_splits(source_dir).items() if split == "test"}


def choose(labels: dict[str, str], blocks: int, anomalies: int, seed: str) -> set[str]:
    """``anomalies`` anomalous and ``blocks - anomalies`` normal block ids, the first by a seeded SHA-256 order."""
    from training.splits import seeded_order

    anomalous = seeded_order([b for b, v in labels.items() if v == "Anomaly"], seed)
    normal = seeded_order([b for b, v in labels.items() if v == "Normal"], seed)
    if len(anomalous) < anomalies or len(normal) < blocks - anomalies:
        raise SystemExit(f"the source has {len(anomalous)} anomalous and {len(normal)} normal blocks: too few")
    return set(anomalous[:anomalies]) | set(normal[: blocks - anomalies])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source-dir", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--blocks", type=int, default=400)
    ap.add_argument("--anomalies", type=int, default=40)
    ap.add_argument("--seed", default="rationad-demo-1")
    ap.add_argument("--out-dir", type=Path, default=DATA)
    args = ap.parse_args(argv)

    with (args.source_dir / "anomaly_label_dev.csv").open(newline="") as f:
        labels = {row["BlockId"]: row["Label"] for row in csv.DictReader(f)}
    held_out = test_blocks(args.source_dir)
    chosen = choose({b: v for b, v in labels.items() if b in held_out}, args.blocks, args.anomalies, args.seed)
    wanted = {b.encode() for b in chosen}

    kept: list[bytes] = []
    seen: set[bytes] = set()
    partial = 0
    with gzip.open(args.source_dir / "HDFS_2pct_dev.log.gz", "rb") as f:
        for line in f:
            named = set(BLOCK.findall(line))
            if not named & wanted:
                continue
            if not named <= wanted:
                partial += 1  # names a block outside the sample: dropped (see the module docstring)
                continue
            kept.append(line if line.endswith(b"\n") else line + b"\n")
            seen |= named

    if seen != wanted:
        raise SystemExit(f"{len(wanted - seen)} chosen blocks have no line in the source")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.out_dir / "hdfs_sample.log.gz"
    # mtime=0 and no file name: the same input gives the same bytes (a reproducible, diff-free artefact).
    with log_path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                    compresslevel=9) as gz:
        gz.writelines(kept)
    labels_path = args.out_dir / "hdfs_sample_labels.csv"
    with labels_path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["BlockId", "Label"])
        for b in sorted(chosen):
            w.writerow([b, labels[b]])
    n_anom = sum(labels[b] == "Anomaly" for b in chosen)
    print(f"{log_path}: {len(kept)} lines, {len(chosen)} blocks ({n_anom} anomalous), "
          f"{log_path.stat().st_size} bytes; {partial} lines naming a block outside the sample dropped")
    print(f"{labels_path}: {len(chosen)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
