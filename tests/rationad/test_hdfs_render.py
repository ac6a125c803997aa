"""Tests for rationad.hdfs_render: template-id sessions -> raw HDFS lines that the hdfs dialect parses."""

from __future__ import annotations

import gzip
import json
import random
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rationad import demo
from rationad.config import InputConfig
from rationad.dialects import hdfs_header, make_parser
from rationad.hdfs_render import (
    HDFS_TEMPLATES,
    MAX_GAP_SECS,
    format_header,
    iter_session_records,
    render_session,
    render_stream,
)
from rationad.templates import to_template

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
START = 1_226_246_400.0  # 2008-11-09 16:00:00 UTC, "081109 160000"
LINE = re.compile(r"(\d{6}) (\d{6}) (\d+) (INFO|WARN) ([\w.$]+): (.+)")
TEMPLATE_RX = {e: re.compile(".*?".join(map(re.escape, t.split("<*>"))), re.DOTALL) for e, t in HDFS_TEMPLATES.items()}
PARSER = make_parser(InputConfig(dialect="hdfs"))


def content(line: str) -> str:
    m = LINE.fullmatch(line)
    assert m is not None, line
    return m.group(6)


def template_ids(text: str) -> list[str]:
    return [e for e, rx in TEMPLATE_RX.items() if rx.fullmatch(text)]


def test_the_thirty_loghub_templates_are_embedded():
    assert list(HDFS_TEMPLATES) == [f"E{i}" for i in range(1, 31)]
    # The trap in datasets/README.md: these are the numbers of HDFS_templates.csv, not of the structured CSV.
    assert "Receiving block" in HDFS_TEMPLATES["E5"]
    assert "allocateBlock" in HDFS_TEMPLATES["E22"]
    assert "terminating" in HDFS_TEMPLATES["E11"]
    assert "addStoredBlock: blockMap updated" in HDFS_TEMPLATES["E26"]


def test_embedded_templates_equal_the_shared_loghub_file():
    path = SHARED / "loghub" / "HDFS_templates.csv"
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    import csv

    with path.open(newline="") as f:
        assert {r["EventId"]: r["EventTemplate"] for r in csv.DictReader(f)} == HDFS_TEMPLATES


@pytest.mark.parametrize("eid", list(HDFS_TEMPLATES))
def test_each_template_renders_one_hdfs_line_that_matches_only_its_own_template(eid):
    (line,) = render_session([eid], block_id="blk_-6952295868487656571", start_ts=START, rng=random.Random(1))
    assert LINE.fullmatch(line), line
    assert line.startswith("081109 160000 ")
    assert "blk_-6952295868487656571" in line
    assert template_ids(content(line)) == [eid]


@pytest.mark.parametrize("eid", list(HDFS_TEMPLATES))
def test_each_template_id_always_gives_the_same_masked_template(eid):
    seen = set()
    for seed in range(40):
        rng = random.Random(seed)
        block = f"blk_{rng.randrange(-(2**63), 2**63)}"
        (line,) = render_session([eid], block_id=block, start_ts=START + seed * 997, rng=rng)
        (parsed,) = PARSER.parse(line.encode(), topic="t", partition=0, offset=seed)
        seen.add(to_template(parsed.message))
    assert len(seen) == 1, seen


def test_distinct_template_ids_give_distinct_masked_templates():
    masked = {}
    for eid in HDFS_TEMPLATES:
        (line,) = render_session([eid], block_id="blk_1", start_ts=START, rng=random.Random(0))
        masked[eid] = to_template(hdfs_header(line)[1])
    assert len(set(masked.values())) == len(masked)


def _real_lines() -> list[str]:
    lines = [b.decode() for b in demo.sample_lines()]
    path = SHARED / "loghub" / "HDFS_2k.log"
    if path.exists():
        lines += path.read_text().splitlines()
    return lines


def test_level_component_and_wording_match_real_hdfs_lines_of_the_same_template_text():
    """Match real lines to E-ids by their TEXT, then compare: our masked template (which includes level and
    component) must be one that real lines of that template have."""
    real: dict[str, set[str]] = defaultdict(set)
    for line in _real_lines():
        _, message = hdfs_header(line)
        ids = template_ids(message.split(": ", 1)[1])
        assert len(ids) == 1, (ids, line)
        real[ids[0]].add(to_template(message))
    assert len(real) >= 14  # the embedded sample alone covers the common write/read/delete life cycle
    for eid, masked in real.items():
        rng = random.Random(eid)
        (line,) = render_session([eid], block_id="blk_-42", start_ts=START, rng=rng)
        assert to_template(hdfs_header(line)[1]) in masked, (eid, line, masked)


def test_session_lines_are_in_order_name_the_block_and_have_non_decreasing_times():
    events = ["E22", "E5", "E5", "E5", "E11", "E9", "E11", "E9", "E11", "E9", "E26", "E26", "E26", "E23", "E21"]
    start = 1_226_262_975.4  # 081109 203615.4
    lines = render_session(events, block_id="blk_38865049064139660", start_ts=start, rng=random.Random(3))
    assert len(lines) == len(events)
    assert [template_ids(content(x)) for x in lines] == [[e] for e in events]
    assert lines[0].startswith("081109 203615 ")
    times = [datetime.strptime(x[:13], "%y%m%d %H%M%S").replace(tzinfo=UTC).timestamp() for x in lines]
    assert times == sorted(times)
    assert times[-1] - times[0] <= MAX_GAP_SECS * len(events)
    assert all("blk_38865049064139660" in x for x in lines)
    # Within a session the variable parts agree: one block size, the pipeline's DataNodes.
    sizes = {m for x in lines for m in re.findall(r"size (\d+)", x)}
    assert len(sizes) == 1
    stored_on = {re.search(r"updated: (\S+)", x).group(1) for x in lines if "blockMap updated" in x}
    assert len(stored_on) == 3 and all(re.fullmatch(r"10\.25[01]\.\d+\.\d+:50010", ip) for ip in stored_on)


def test_rendering_is_deterministic_for_a_seed():
    events = list(HDFS_TEMPLATES)
    a = render_session(events, block_id="blk_7", start_ts=START, rng=random.Random(11))
    b = render_session(events, block_id="blk_7", start_ts=START, rng=random.Random(11))
    c = render_session(events, block_id="blk_7", start_ts=START, rng=random.Random(12))
    assert a == b
    assert a != c


def test_unknown_event_id_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="'E31'"):
        render_session(["E5", "E31"], block_id="blk_1", start_ts=START, rng=random.Random(0))
    with pytest.raises(ValueError, match="'5'"):
        render_session(["5"], block_id="blk_1", start_ts=START, rng=random.Random(0))


def test_format_header_is_utc_hdfs_style():
    assert format_header(1_226_262_975.9) == "081109 203615"


def test_rendered_lines_round_trip_through_the_hdfs_dialect():
    block = "blk_-1608999687919862906"
    events = ["E22", "E5", "E5", "E5", "E7", "E11", "E9", "E26", "E26", "E2", "E3", "E4", "E23", "E21", "E20"]
    start = 1_226_262_975.0
    lines = render_session(events, block_id=block, start_ts=start, rng=random.Random(5))
    for n, raw in enumerate(lines):
        (parsed,) = PARSER.parse(raw.encode(), topic="logs", partition=0, offset=n)
        assert parsed.key == block
        assert parsed.raw == raw
        assert parsed.offset == n
        assert parsed.ts is not None and start <= parsed.ts <= start + MAX_GAP_SECS * len(events)
        assert re.match(r"(INFO|WARN) dfs\.", parsed.message)
        assert parsed.message == raw.split(" ", 3)[3]  # date, time and thread id are not shown to the model


def test_a_multi_block_delete_line_joins_each_named_block():
    lines = render_session(["E30"], block_id="blk_1", start_ts=START, rng=random.Random(0),
                           co_blocks=["blk_-2", "blk_3"])
    parsed = PARSER.parse(lines[0].encode())
    assert [p.key for p in parsed] == ["blk_1", "blk_-2", "blk_3"]
    assert len({p.raw for p in parsed}) == 1
    # By default a rendered session names only its own block (no stray sessions in a rendered stream).
    (default,) = render_session(["E30"], block_id="blk_1", start_ts=START, rng=random.Random(0))
    assert [p.key for p in PARSER.parse(default.encode())] == ["blk_1"]
    assert "to delete  blk_1" in default  # HDFS_v1 writes two spaces there


# ---- iter_session_records ------------------------------------------------------------------------------------------


def _write(path: Path, lines: list[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


GOOD = json.dumps({"id": "s1", "events": ["E5", "E22", "E11"], "label": "normal"})


@pytest.mark.parametrize("name", ["s.jsonl", "s.jsonl.gz"])
def test_iter_session_records_reads_plain_and_gzip(tmp_path, name):
    path = _write(tmp_path / name, [GOOD, "", json.dumps({"id": 2, "events": ["E9"], "label": "anomalous"})])
    assert list(iter_session_records(path)) == [
        {"id": "s1", "events": ["E5", "E22", "E11"], "label": "normal"},
        {"id": "2", "events": ["E9"], "label": "anomalous"},
    ]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"id": "x", "events": ["E5"', "not valid JSON"),
        ('["E5"]', "expected a JSON object"),
        ('{"id": "x", "events": [], "label": "normal"}', "non-empty list"),
        ('{"id": "x", "label": "normal"}', "non-empty list"),
        ('{"id": "x", "events": ["E5", "E99"], "label": "normal"}', "'E99'"),
        ('{"id": "x", "events": ["E5"], "label": "weird"}', "label"),
    ],
)
def test_a_bad_line_is_a_value_error_naming_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path / "s.jsonl", [GOOD, GOOD, bad, GOOD])
    records = iter_session_records(path)
    assert next(records)["id"] == "s1"
    with pytest.raises(ValueError, match=re.escape(f"{path}:3") + ".*" + re.escape(message)):
        list(records)


def test_reads_the_shared_session_file():
    path = SHARED / "hdfs_sessions" / "hdfs_sessions.jsonl"
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    labels = defaultdict(int)
    for rec in iter_session_records(path):
        labels[rec["label"]] += 1
    assert dict(labels) == {"anomalous": 17_434, "normal": 4_466}


# ---- render_stream -------------------------------------------------------------------------------------------------


def _records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    normal = ["E22", "E5", "E5", "E5", "E11", "E9", "E11", "E9", "E11", "E9", "E26", "E26", "E26"]
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append({"id": str(i), "events": normal[: rng.randint(4, 8)] + ["E7", "E20"], "label": "anomalous"})
        else:
            out.append({"id": str(i), "events": normal + ["E23", "E21"] * rng.randint(0, 2), "label": "normal"})
    return out


def test_render_stream_interleaves_sessions_in_global_time_order():
    records = _records(30)
    out = list(render_stream(records, rng=random.Random(9), start_ts=START, interleave=4))
    assert len(out) == sum(len(r["events"]) for r in records)

    by_block: dict[str, list[str]] = defaultdict(list)
    labels: dict[str, str | None] = {}
    order: list[str] = []
    for block, line, label in out:
        assert block in line
        by_block[block].append(line)
        labels[block] = label
        if block not in order:
            order.append(block)
    assert len(by_block) == len(records)
    assert all(re.fullmatch(r"blk_-?\d+", b) and -(2**63) <= int(b[4:]) < 2**63 for b in by_block)
    # Sessions keep their own event order and label, in the order the records came.
    for block, rec in zip(order, records, strict=True):
        assert [template_ids(content(x))[0] for x in by_block[block]] == rec["events"]
        assert labels[block] == rec["label"]

    times = [PARSER.parse(line.encode())[0].ts for _, line, _ in out]
    assert times == sorted(times)

    # Interleaving: more than one session in flight at some point, never more than `interleave`.
    last = {b: max(i for i, (x, _, _) in enumerate(out) if x == b) for b in by_block}
    first = {b: min(i for i, (x, _, _) in enumerate(out) if x == b) for b in by_block}
    in_flight = [sum(first[b] <= i <= last[b] for b in by_block) for i in range(len(out))]
    assert max(in_flight) == 4
    switches = sum(out[i][0] != out[i + 1][0] for i in range(len(out) - 1))
    assert switches > 2 * len(records)


def test_render_stream_is_deterministic_and_lazy():
    records = _records(12)
    a = list(render_stream(records, rng=random.Random(1), start_ts=START, interleave=3))
    b = list(render_stream(iter(records), rng=random.Random(1), start_ts=START, interleave=3))
    c = list(render_stream(records, rng=random.Random(2), start_ts=START, interleave=3))
    assert a == b
    assert a != c


def test_render_stream_with_interleave_one_is_sequential():
    records = _records(5)
    out = list(render_stream(records, rng=random.Random(1), start_ts=START, interleave=1))
    blocks = [b for b, _, _ in out]
    runs = [b for i, b in enumerate(blocks) if i == 0 or blocks[i - 1] != b]
    assert len(runs) == len(records)


def test_render_stream_rejects_bad_input():
    with pytest.raises(ValueError, match="interleave"):
        list(render_stream(_records(2), rng=random.Random(1), start_ts=START, interleave=0))
    with pytest.raises(ValueError, match="'E0'"):
        list(render_stream([{"id": "a", "events": ["E0"]}], rng=random.Random(1), start_ts=START, interleave=2))
    with pytest.raises(ValueError, match="no events"):
        list(render_stream([{"id": "a", "events": []}], rng=random.Random(1), start_ts=START, interleave=2))
