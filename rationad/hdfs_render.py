"""Render HDFS template-id sessions (``hdfs_sessions.jsonl``: ``{"id", "events": ["E5", "E22", ...], "label"}``)
into raw HDFS log lines in the exact style of Loghub's ``HDFS_2k.log``::

    081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating

(date yyMMdd, time HHmmss in UTC, thread id, level, component, content). Event ids are the numbering of Loghub's
``HDFS_templates.csv`` (E5 = Receiving block, E22 = allocateBlock, E11 = PacketResponder terminating, ...), embedded
here as ``HDFS_TEMPLATES`` so the package needs no data files. The ``EventId`` column of
``HDFS_2k.log_structured.csv`` numbers them differently: templates were matched by text, never by id.

Each template's level, component and wording are those of real lines of Loghub HDFS_v1 (``HDFS_2k.log`` and
LogLead's 2% sample, matched to the ids by text). E1, E17, E19, E24 and E29 do not occur in those samples: their
component is the Hadoop class that logs them (E1: DataBlockScanner.addBlock's warning; E17: DataTransfer, beside
E16; E19: FSDataset; E24: FSNamesystem; E29: PendingReplicationBlocks$PendingReplicationMonitor, as in HDFS_v1).
Every id renders to ONE wording, so that ``rationad.templates.to_template`` of a rendered message depends only on
the id. Variable parts are realistic: a replication pipeline of three DataNodes ``10.250.x.y`` / ``10.251.x.y``
(port 50010), 64 MiB or smaller block sizes, MapReduce output paths, thread ids. Time is compressed: consecutive lines of one session are at most ``MAX_GAP_SECS`` apart, so a session
never looks idle to a session window.
"""

from __future__ import annotations

import gzip
import heapq
import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HDFS_TEMPLATES: dict[str, str] = {
    "E1": "<*>Adding an already existing block<*>",
    "E2": "<*>Verification succeeded for<*>",
    "E3": "<*>Served block<*>to<*>",
    "E4": "<*>Got exception while serving<*>to<*>",
    "E5": "<*>Receiving block<*>src:<*>dest:<*>",
    "E6": "<*>Received block<*>src:<*>dest:<*>of size<*>",
    "E7": "<*>writeBlock<*>received exception<*>",
    "E8": "<*>PacketResponder<*>for block<*>Interrupted<*>",
    "E9": "<*>Received block<*>of size<*>from<*>",
    "E10": "<*>PacketResponder<*>Exception<*>",
    "E11": "<*>PacketResponder <*> for block <*> terminating<*>",
    "E12": "<*>:Exception writing block<*>to mirror<*>",
    "E13": "<*>Receiving empty packet for block<*>",
    "E14": "<*>Exception in receiveBlock for block<*>",
    "E15": "<*>Changing block file offset of block<*>from<*>to<*>meta file offset to<*>",
    "E16": "<*>:Transmitted block<*>to<*>",
    "E17": "<*>:Failed to transfer<*>to<*>got<*>",
    "E18": "<*>Starting thread to transfer block<*>to<*>",
    "E19": "<*>Reopen Block<*>",
    "E20": "<*>Unexpected error trying to delete block<*>BlockInfo not found in volumeMap<*>",
    "E21": "<*>Deleting block<*>file<*>",
    "E22": "<*>BLOCK* NameSystem<*>allocateBlock:<*>",
    "E23": "<*>BLOCK* NameSystem<*>delete:<*>is added to invalidSet of<*>",
    "E24": "<*>BLOCK* Removing block<*>from neededReplications as it does not belong to any file<*>",
    "E25": "<*>BLOCK* ask<*>to replicate<*>to<*>",
    "E26": "<*>BLOCK* NameSystem<*>addStoredBlock: blockMap updated:<*>is added to<*>size<*>",
    "E27": "<*>BLOCK* NameSystem<*>addStoredBlock: Redundant addStoredBlock request received for<*>on<*>size<*>",
    "E28": "<*>BLOCK* NameSystem<*>addStoredBlock: addStoredBlock request received for<*>on<*>size<*>But it does not "
    "belong to any file.",
    "E29": "<*>PendingReplicationMonitor timed out block<*>",
    "E30": "<*>BLOCK* ask <*> to delete <*>",
}

MAX_GAP_SECS = 5.0
DATANODE_PORT = 50010
FULL_BLOCK = 67_108_864  # 64 MiB, the size of most blocks in HDFS_v1

# Thread-id ranges seen per component in HDFS_v1 (NameNode and scanner threads are few and long-lived; DataXceiver,
# PacketResponder, BlockReceiver and DataTransfer threads are created per transfer, so their ids are large).
_NAMENODE_THREADS = (19, 35)
_DATANODE_THREADS = (13, 20)


@dataclass(slots=True)
class _Block:
    """The variable parts shared by all lines of one block session."""

    block_id: str
    size: int
    pipeline: list[str]  # DataNode IPs, replication 3
    spares: list[str]  # other DataNodes (re-replication, invalidSet targets)
    client: str
    path: str
    thread: int  # base id of this block's DataXceiver threads
    co_blocks: Sequence[str] = ()
    counters: dict[str, int] = field(default_factory=dict)

    def nth(self, eid: str, items: Sequence[str]) -> str:
        """The next of ``items`` for template ``eid`` (cycles through the pipeline as HDFS does)."""
        n = self.counters.get(eid, 0)
        self.counters[eid] = n + 1
        return items[n % len(items)]


def _ip(rng: random.Random) -> str:
    return f"10.{rng.choice((250, 251))}.{rng.randint(1, 254)}.{rng.randint(1, 254)}"


def _path(rng: random.Random) -> str:
    job = f"200811{rng.randint(9, 11):02d}{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}_{rng.randint(1, 9):04d}"
    if rng.random() < 0.02:
        return f"/mnt/hadoop/mapred/system/job_{job}/job.jar."
    out = rng.choice(("rand", "rand", "randtxt", "sortrand", "wcnt")) + rng.choice(("", str(rng.randint(1, 9))))
    kind = "r" if out.startswith(("sort", "wcnt")) else "m"
    part = rng.randint(0, 999)
    return f"/user/root/{out}/_temporary/_task_{job}_{kind}_{part:06d}_0/part-{part:05d}."


def _new_block(block_id: str, rng: random.Random, co_blocks: Sequence[str]) -> _Block:
    nodes = [_ip(rng) for _ in range(6)]
    size = FULL_BLOCK if rng.random() < 0.8 else rng.randint(1_000_000, FULL_BLOCK - 1)
    return _Block(block_id=block_id, size=size, pipeline=nodes[:3], spares=nodes[3:], client=nodes[0],
                  path=_path(rng), thread=rng.randint(100, 30_000), co_blocks=tuple(co_blocks))


def _dn(ip: str) -> str:
    return f"{ip}:{DATANODE_PORT}"


def _port(rng: random.Random) -> int:
    return rng.randint(32768, 60999)


# Each renderer: (block, rng) -> content. One wording per template (see the module docstring).
_Render = Callable[[_Block, random.Random], str]


def _e5(b: _Block, r: random.Random) -> str:
    dest = b.nth("E5", b.pipeline)
    i = b.pipeline.index(dest)
    src = b.client if i == 0 else b.pipeline[i - 1]
    return f"Receiving block {b.block_id} src: /{src}:{_port(r)} dest: /{_dn(dest)}"


def _e9(b: _Block, r: random.Random) -> str:
    dest = b.nth("E9", b.pipeline)
    i = b.pipeline.index(dest)
    return f"Received block {b.block_id} of size {b.size} from /{b.client if i == 0 else b.pipeline[i - 1]}"


def _e15(b: _Block, r: random.Random) -> str:
    offset = r.randint(1, 1024) * 65536
    meta = offset // 512 * 4 + 7  # a 7-byte header, then a 4-byte CRC per 512-byte chunk
    return f"Changing block file offset of block {b.block_id} from 0 to {offset} meta file offset to {meta}"


_RENDER: dict[str, tuple[str, str, _Render]] = {
    "E1": ("WARN", "dfs.DataBlockScanner", lambda b, r: f"Adding an already existing block {b.block_id}"),
    "E2": ("INFO", "dfs.DataBlockScanner", lambda b, r: f"Verification succeeded for {b.block_id}"),
    "E3": ("INFO", "dfs.DataNode$DataXceiver",
           lambda b, r: f"{_dn(b.nth('E3', b.pipeline))} Served block {b.block_id} to /{_ip(r)}"),
    "E4": ("WARN", "dfs.DataNode$DataXceiver",
           lambda b, r: f"{_dn(b.nth('E4', b.pipeline))}:Got exception while serving {b.block_id} to /{_ip(r)}:"),
    "E5": ("INFO", "dfs.DataNode$DataXceiver", _e5),
    "E6": ("INFO", "dfs.DataNode$DataXceiver",
           lambda b, r: f"Received block {b.block_id} src: /{b.pipeline[0]}:{_port(r)} dest: "
                        f"/{_dn(b.nth('E6', b.spares))} of size {b.size}"),
    "E7": ("INFO", "dfs.DataNode$DataXceiver",
           lambda b, r: f"writeBlock {b.block_id} received exception java.io.IOException: Could not read from stream"),
    "E8": ("INFO", "dfs.DataNode$PacketResponder",
           lambda b, r: f"PacketResponder {r.randint(0, 2)} for block {b.block_id} Interrupted."),
    "E9": ("INFO", "dfs.DataNode$PacketResponder", _e9),
    "E10": ("INFO", "dfs.DataNode$PacketResponder",
            lambda b, r: f"PacketResponder {b.block_id} {r.randint(0, 2)} Exception java.net.SocketTimeoutException: "
                         f"{r.choice((60000, 120000))} millis timeout while waiting for channel to be ready for read. "
                         f"ch : java.nio.channels.SocketChannel[connected local=/{b.pipeline[0]}:{_port(r)} "
                         f"remote=/{_dn(b.pipeline[1])}]"),
    "E11": ("INFO", "dfs.DataNode$PacketResponder",
            lambda b, r: f"PacketResponder {b.nth('E11', ('1', '2', '0'))} for block {b.block_id} terminating"),
    "E12": ("INFO", "dfs.DataNode$BlockReceiver",
            lambda b, r: f"{_dn(b.pipeline[0])}:Exception writing block {b.block_id} to mirror {_dn(b.pipeline[1])}"),
    "E13": ("INFO", "dfs.DataNode$BlockReceiver", lambda b, r: f"Receiving empty packet for block {b.block_id}"),
    "E14": ("INFO", "dfs.DataNode$BlockReceiver",
            lambda b, r: f"Exception in receiveBlock for block {b.block_id} java.io.EOFException"),
    "E15": ("INFO", "dfs.DataNode$BlockReceiver", _e15),
    "E16": ("INFO", "dfs.DataNode$DataTransfer",
            lambda b, r: f"{_dn(b.pipeline[0])}:Transmitted block {b.block_id} to /{_dn(b.nth('E16', b.spares))}"),
    "E17": ("WARN", "dfs.DataNode$DataTransfer",
            lambda b, r: f"{_dn(b.pipeline[0])}:Failed to transfer {b.block_id} to {_dn(b.nth('E17', b.spares))} "
                         f"got java.io.IOException: Connection reset by peer"),
    "E18": ("INFO", "dfs.DataNode",
            lambda b, r: f"{_dn(b.pipeline[0])} Starting thread to transfer block {b.block_id} to "
                         f"{_dn(b.nth('E18', b.spares))}"),
    "E19": ("INFO", "dfs.FSDataset", lambda b, r: f"Reopen Block {b.block_id}"),
    "E20": ("WARN", "dfs.FSDataset",
            lambda b, r: f"Unexpected error trying to delete block {b.block_id}. BlockInfo not found in volumeMap."),
    "E21": ("INFO", "dfs.FSDataset",
            lambda b, r: f"Deleting block {b.block_id} file /mnt/hadoop/dfs/data/current/subdir{r.randint(0, 63)}/"
                         f"{b.block_id}"),
    "E22": ("INFO", "dfs.FSNamesystem", lambda b, r: f"BLOCK* NameSystem.allocateBlock: {b.path} {b.block_id}"),
    "E23": ("INFO", "dfs.FSNamesystem",
            lambda b, r: f"BLOCK* NameSystem.delete: {b.block_id} is added to invalidSet of "
                         f"{_dn(b.nth('E23', b.pipeline))}"),
    "E24": ("INFO", "dfs.FSNamesystem",
            lambda b, r: f"BLOCK* Removing block {b.block_id} from neededReplications as it does not belong to any "
                         f"file."),
    "E25": ("INFO", "dfs.FSNamesystem",
            lambda b, r: f"BLOCK* ask {_dn(b.pipeline[0])} to replicate {b.block_id} to datanode(s) "
                         f"{_dn(b.nth('E25', b.spares))}"),
    "E26": ("INFO", "dfs.FSNamesystem",
            lambda b, r: f"BLOCK* NameSystem.addStoredBlock: blockMap updated: {_dn(b.nth('E26', b.pipeline))} is "
                         f"added to {b.block_id} size {b.size}"),
    "E27": ("WARN", "dfs.FSNamesystem",
            lambda b, r: f"BLOCK* NameSystem.addStoredBlock: Redundant addStoredBlock request received for "
                         f"{b.block_id} on {_dn(b.nth('E27', b.pipeline))} size {b.size}"),
    "E28": ("INFO", "dfs.FSNamesystem",
            lambda b, r: f"BLOCK* NameSystem.addStoredBlock: addStoredBlock request received for {b.block_id} on "
                         f"{_dn(b.nth('E28', b.pipeline))} size {b.size} But it does not belong to any file."),
    "E29": ("WARN", "dfs.PendingReplicationBlocks$PendingReplicationMonitor",
            lambda b, r: f"PendingReplicationMonitor timed out block {b.block_id}"),
    # HDFS batches deletes: one line may name many blocks (two spaces before the first, as in HDFS_v1).
    "E30": ("INFO", "dfs.FSNamesystem",
            lambda b, r: f"BLOCK* ask {_dn(b.nth('E30', b.pipeline))} to delete  "
                         + " ".join((b.block_id, *b.co_blocks))),
}

assert _RENDER.keys() == HDFS_TEMPLATES.keys()

_NAMENODE_COMPONENTS = {"dfs.FSNamesystem", "dfs.PendingReplicationBlocks$PendingReplicationMonitor"}
_SCANNER_COMPONENTS = {"dfs.DataBlockScanner", "dfs.FSDataset", "dfs.DataNode"}


def _thread(component: str, b: _Block, rng: random.Random) -> int:
    if component in _NAMENODE_COMPONENTS:
        return rng.randint(*_NAMENODE_THREADS)
    if component in _SCANNER_COMPONENTS:
        return rng.randint(*_DATANODE_THREADS)
    return b.thread + rng.randint(0, 40)


def _gap(prev: str | None, eid: str, rng: random.Random) -> float:
    """Seconds between two events of one block: a write pipeline is fast, later phases come a little after."""
    if prev is None:
        return 0.0
    if eid in ("E5", "E22") and prev in ("E5", "E22"):
        return rng.uniform(0.0, 0.3)
    return min(MAX_GAP_SECS, rng.expovariate(1.0))


def format_header(ts: float) -> str:
    """``yyMMdd HHmmss`` of epoch seconds (UTC), as HDFS writes it."""
    return datetime.fromtimestamp(ts, UTC).strftime("%y%m%d %H%M%S")


def _check_event(eid: str) -> None:
    if eid not in _RENDER:
        raise ValueError(f"unknown HDFS template id {eid!r} (expected E1..E30 of Loghub's HDFS_templates.csv)")


def _timed_lines(events: Sequence[str], *, block_id: str, start_ts: float, rng: random.Random,
                 co_blocks: Sequence[str] = ()) -> list[tuple[float, str]]:
    for eid in events:
        _check_event(eid)
    b = _new_block(block_id, rng, co_blocks)
    out: list[tuple[float, str]] = []
    ts, prev = start_ts, None
    for eid in events:
        ts += _gap(prev, eid, rng)
        level, component, render = _RENDER[eid]
        out.append((ts, f"{format_header(ts)} {_thread(component, b, rng)} {level} {component}: {render(b, rng)}"))
        prev = eid
    return out


def render_session(events: list[str], *, block_id: str, start_ts: float, rng: random.Random,
                   co_blocks: Sequence[str] = ()) -> list[str]:
    """One raw HDFS line per event id, in order, all naming ``block_id``; times non-decreasing from ``start_ts``.

    ``co_blocks`` are other block ids that E30 ("ask ... to delete") lines name as well (HDFS batches deletes);
    none by default, so a rendered session never creates sessions for other blocks. Raises ValueError naming an
    unknown event id (before rendering anything).
    """
    return [line for _, line in _timed_lines(events, block_id=block_id, start_ts=start_ts, rng=rng,
                                             co_blocks=co_blocks)]


def new_block_id(rng: random.Random) -> str:
    """A random HDFS block id: ``blk_`` and a signed 64-bit integer."""
    return f"blk_{rng.randrange(-(2**63), 2**63)}"


# ---- the session file ----------------------------------------------------------------------------------------------

LABELS = ("normal", "anomalous")


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def iter_session_records(path: str | Path) -> Iterator[dict]:
    """The records of an ``hdfs_sessions.jsonl`` file (plain or .gz): ``{"id": str, "events": [...], "label":
    "normal" | "anomalous" | None}``. Blank lines are ignored; any other bad line raises ValueError naming
    ``file:line`` (bad JSON, not an object, missing/empty events, an unknown template id, a bad label)."""
    path = Path(path)
    with _open(path) as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")  # noqa: TRY004
            events = obj.get("events")
            if not isinstance(events, list) or not events:
                raise ValueError(f"{where}: 'events' must be a non-empty list of template ids")
            for eid in events:
                if not isinstance(eid, str) or eid not in _RENDER:
                    raise ValueError(f"{where}: unknown HDFS template id {eid!r} in 'events'")
            label = obj.get("label")
            if label is not None and label not in LABELS:
                raise ValueError(f"{where}: 'label' must be one of {LABELS}, got {label!r}")
            yield {"id": str(obj.get("id", n)), "events": events, "label": label}


# ---- a stream of many sessions -------------------------------------------------------------------------------------


def render_stream(records: Iterable[dict], *, rng: random.Random, start_ts: float,
                  interleave: int) -> Iterator[tuple[str, str, str | None]]:
    """``(block_id, raw_line, label)`` for every line of every record, up to ``interleave`` sessions in flight at
    once so their lines interleave like a real stream; timestamps are globally non-decreasing (a new session starts
    when one finishes, at the current time). Each session gets a fresh block id from ``rng``; the output depends
    only on the records and the rng's seed."""
    if interleave < 1:
        raise ValueError(f"interleave must be >= 1, got {interleave}")
    it = iter(records)
    heap: list[tuple[float, int, int]] = []  # (ts of the next line, session seq, index of that line)
    sessions: dict[int, tuple[str, str | None, list[tuple[float, str]]]] = {}
    seq = 0

    def start(at: float) -> bool:
        nonlocal seq
        rec = next(it, None)
        if rec is None:
            return False
        if not rec.get("events"):
            raise ValueError(f"record {rec.get('id')!r} has no events")
        block = new_block_id(rng)
        lines = _timed_lines(rec["events"], block_id=block, start_ts=at, rng=rng)
        sessions[seq] = (block, rec.get("label"), lines)
        heapq.heappush(heap, (lines[0][0], seq, 0))
        seq += 1
        return True

    clock = start_ts
    for _ in range(interleave):
        if not start(clock):
            break
        clock += rng.uniform(0.0, 1.0)
    while heap:
        ts, s, i = heapq.heappop(heap)
        block, label, lines = sessions[s]
        yield block, lines[i][1], label
        if i + 1 < len(lines):
            heapq.heappush(heap, (lines[i + 1][0], s, i + 1))
        else:
            del sessions[s]
            start(ts + rng.uniform(0.0, 1.0))
