"""kill -9 the daemon at random moments while rendered HDFS sessions stream in, restart it each time: at the end every
session is accounted for (a verdict event, or a dead letter if the model's answer stayed malformed), every input line
lies in a judged session, and a session emitted twice carries the same event id both times.

The daemon runs with static group membership (``kafka.group_instance_id``), as deploy/ configures it: each restart takes
the killed member's place at once. noida-db never expires a killed dynamic member (a Kafka broker does, after
``session.timeout.ms``); the durable verdict cache's faust group has no instance id, so the test removes that group's
members after each kill, as the broker's session expiry would (``support.expire_dead_members``).

``RATIONAD_FAILURE_KILLS`` (default 5), ``RATIONAD_FAILURE_SESSIONS`` (default 10) and ``RATIONAD_FAILURE_SEED``
(default: random, printed) make the long version: e.g. 30 kills over 300 sessions.
"""

import asyncio
import os
from collections import Counter, defaultdict
import random
import signal
import time

import pytest

from rationad.broker import free_port
from rationad.repartition import is_pack, pack_source, unpack
from tests.failure.support import (
    expire_dead_members,
    inconsistent_ids,
    metric,
    missing_keys,
    new_stream,
    produce_chunks,
    settled_outcomes,
    uncovered_lines,
    wait_until,
)
from tests.integration.harness import DaemonProcess, committed_vs_end, read_to_end, write_config

pytestmark = pytest.mark.integration

KILLS = int(os.environ.get("RATIONAD_FAILURE_KILLS", "5"))
SESSIONS = int(os.environ.get("RATIONAD_FAILURE_SESSIONS", "10"))


def test_kill9_at_random_moments_loses_no_session(broker, model, vllm_server, tmp_path):
    _kill9(broker, model, vllm_server, tmp_path, kills=KILLS, sessions=SESSIONS, repartition="never")


def test_kill9_with_repartitioning_loses_no_session(broker, model, vllm_server, tmp_path):
    """The same with the input unkeyed (lines of a block spread over both partitions) and repartitioning on: a kill can
    fall between the two hops; the input is committed only after its lines are on the internal topic, and every line
    there lies in a judged session of its block."""
    _kill9(broker, model, vllm_server, tmp_path, kills=max(2, KILLS - 2), sessions=max(8, SESSIONS // 2),
           repartition="always")


def _kill9(broker, model, vllm_server, tmp_path, *, kills: int, sessions: int, repartition: str) -> None:
    seed = int(os.environ.get("RATIONAD_FAILURE_SEED", str(random.randrange(10**6))))
    print(f"RATIONAD_FAILURE_SEED={seed}")
    rng = random.Random(seed)
    stream = new_stream(broker.bootstrap, sessions, prefix="kill9", partitions=2)
    stream.keyed = repartition == "never"
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", bootstrap=broker.bootstrap, topic=stream.topic, group=stream.group,
                       model=model, server_url=vllm_server.url, port=port, repartition=repartition)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log", env={"RATIONAD_KAFKA__GROUP_INSTANCE_ID": f"{stream.group}-0"})
    producer = produce_chunks(stream, chunks=kills, pause_secs=3.0)
    killed = []
    for _ in range(kills):
        daemon.start()
        # Up (metrics answer), then a random moment: starting, joining, reading, judging or committing.
        assert wait_until(lambda: metric(port, "rationad_ready") is not None, 120,
                          alive=lambda: daemon.proc.poll() is None), daemon.log()[-3000:]
        time.sleep(rng.uniform(0.5, 12.0))
        assert daemon.proc.poll() is None, daemon.log()[-3000:]
        killed.append((metric(port, "rationad_lines_parsed_total"), metric(port, "rationad_sessions_pending")))
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(30)
        # The daemon's own group needs nothing (static membership); the cache's faust group is dynamic, and noida-db
        # never expires its killed member (a Kafka broker does after session.timeout.ms; see support).
        expire_dead_members(broker.bootstrap, [f"{stream.group}-verdicts"])
    producer.join(120)
    daemon.start()
    internal = f"{stream.group}-repartition"
    try:
        evs, dead = settled_outcomes(stream, timeout=480)
        if repartition != "never":  # the second hop settles too: every forwarded line judged and committed
            asyncio.run(committed_vs_end(broker.bootstrap, internal, stream.group, wait_secs=180))
    finally:
        code = daemon.terminate()
    log = daemon.log()
    print(f"kills at (lines parsed, sessions pending): {killed}; events {len(evs)} for {len(stream.labels)} blocks, "
          f"dead-lettered sessions {len(dead)}")
    assert len(killed) == kills
    assert code == 0, log[-3000:]
    assert not missing_keys(stream, evs, dead), f"sessions lost: {missing_keys(stream, evs, dead)}\n{log[-3000:]}"
    assert not inconsistent_ids(evs), inconsistent_ids(evs)
    offsets = asyncio.run(committed_vs_end(broker.bootstrap, stream.topic, stream.group))
    assert all(committed == end for committed, end in offsets.values()), offsets
    if repartition == "never":
        assert not uncovered_lines(stream, evs, dead)
        return
    # Every line on the internal topic lies in a judged (or dead-lettered) session of its block and partition, and
    # every input line reached it (the input is committed to its end, which happens only after the forward's ack).
    forwarded = asyncio.run(read_to_end(broker.bootstrap, internal))
    ranges: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for s in [e["session"] for e in evs] + list(dead):
        if s["topic"] == internal:
            ranges.setdefault((s["key"], s["partition"]), []).append((s["first_offset"], s["last_offset"]))
    # Each input line (source partition and offset, key) with its copies on the internal topic (key, partition,
    # pack offset): a first hop killed before its input commit forwards lines again, and the second hop windows a
    # line it has seen once only (SeenLines), so one of its copies lies in a judged session, not every one.
    copies: dict[tuple, list[tuple[str, int, int]]] = defaultdict(list)
    for r in forwarded:
        if is_pack(r.headers):
            for src_offset, key, _ in unpack(r.value):
                copies[(pack_source(r.headers), src_offset, key)].append((key, r.partition, r.offset))
        else:
            copies[(None, r.partition, r.offset, r.key)].append((r.key.decode(), r.partition, r.offset))
    per_key = Counter(cs[0][0] for cs in copies.values())  # distinct input lines of each block
    short = {b: n for b, n in Counter(b for b, _ in stream.lines).items() if per_key[b] < n}
    assert not short, f"lines of these blocks never reached the internal topic: {short}"
    uncovered = [cs for cs in copies.values()
                 if not any(lo <= off <= hi for key, p, off in cs for lo, hi in ranges.get((key, p), ()))]
    assert not uncovered, uncovered[:20]
    internal_offsets = asyncio.run(committed_vs_end(broker.bootstrap, internal, stream.group))
    assert all((c or 0) == e for c, e in internal_offsets.values()), internal_offsets
