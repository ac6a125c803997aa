"""The template memo is bounded in bytes (issue 13 item 10): whole 64 KiB messages must not pile up in memory."""

import gc
import tracemalloc

from rationad.templates import to_template


def _long(i: int, size: int) -> str:
    head = f"WARN app.Worker{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}{chr(65 + i // 676)}: "
    return head + ("lorem ipsum dolor sit amet " * (size // 27 + 1))[: size - len(head)]


def _retained_bytes(messages) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for make in messages:
            to_template(make())  # each message is garbage once masked, unless the memo keeps it
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_the_memo_does_not_keep_huge_messages():
    # 40 distinct 64 KiB messages: the old 65,536-entry lru_cache kept all of them, with their templates (5 MB;
    # 65,536 of them would be 8 GiB).
    retained = _retained_bytes(lambda i=i: _long(i, 65_536) for i in range(40))
    assert retained < 1_000_000, retained


def test_the_memo_is_bounded_in_bytes_and_evicts_the_oldest_first(monkeypatch):
    from rationad.lru import ByteLRU
    from rationad.templates import TEMPLATE_CACHE_BYTES, TEMPLATE_CACHE_MAX_KEY_CHARS

    memo = to_template.cache
    assert isinstance(memo, ByteLRU) and memo.max_bytes == TEMPLATE_CACHE_BYTES <= 32 * 1024 * 1024
    assert TEMPLATE_CACHE_MAX_KEY_CHARS >= 1_000  # ordinary log lines are memoised
    monkeypatch.setattr(memo, "max_bytes", 512 * 1024)
    memo.clear()
    try:
        msgs = [_long(i, 2_000) for i in range(600)]  # 1.2 MB of keys alone
        retained = _retained_bytes(lambda m=m: m for m in msgs)
        assert memo.nbytes <= 512 * 1024 and retained < 1_000_000, (memo.nbytes, retained)
        assert msgs[-1] in memo and msgs[0] not in memo  # least recently used first
        assert to_template(msgs[0]) == to_template(msgs[0])  # a miss recomputes the same template
    finally:
        memo.clear()


def test_templates_are_unchanged():
    msg = "INFO dfs.DataNode$DataXceiver: Receiving block blk_-12 src: /10.0.0.1:5000 dest: /10.0.0.2:50010"
    assert to_template(msg) == "INFO dfs.DataNode$DataXceiver: Receiving block {*} src: {*} dest: {*}"
    assert to_template(_long(1, 65_536)) == to_template(_long(1, 65_536))


def test_numbered_names_and_hex_byte_strings_are_masked_but_hdfs_templates_are_unchanged():
    assert to_template("RAS KERNEL INFO generating core.9654") == "RAS KERNEL INFO generating core.{*}"
    assert to_template("Ido chip status changed: FF:F2:9F:16:DC:1A ok") == "Ido chip status changed: {*} ok"
    # a clock time with a fraction is one variable (the hex-bytes rule once left ".789": a template per line)
    assert to_template("12:34:56.789 INFO started") == to_template("12:34:56.790 INFO started") == "{*} INFO started"
    # HDFS lines (their templates are what the released model was trained on) keep their templates
    assert to_template("PacketResponder 1 for block blk_-1608999687919862906 terminating") == \
        "PacketResponder {*} for block {*} terminating"
    assert to_template("Verification succeeded for blk_-4980916519894289629") == "Verification succeeded for {*}"


def test_timestamps_with_a_zone_and_numbers_with_a_unit_are_one_variable_each():
    """Found by review (2026-12-05), failing before its fix: an ISO time ending in Z (or a zone offset) kept its date
    and a piece of its seconds, and '35ms' was not a number: with the generic dialect (the whole line is the message)
    every second, millisecond or duration made a template of its own, judged by the model once per line."""
    a = to_template("2024-01-02T03:04:05Z INFO Completed 200 OK in 35ms")
    b = to_template("2024-01-09T11:22:33.123456Z INFO Completed 200 OK in 1204ms")
    assert a == b == "{*} INFO Completed {*} OK in {*}"
    assert to_template("ts=2024-01-02T03:04:05.123+02:00 heartbeat ok") == "ts={*} heartbeat ok"
    assert to_template("2015-10-18 18:01:47,978 INFO took 1.5s, 512MB, 80%") == "{*} INFO took {*}"
    assert to_template("1st attempt of 3 ms-dos jobs") == "1st attempt of {*} ms-dos jobs"  # words stay words


def test_a_number_with_a_unit_then_a_signed_number_is_one_variable():
    """Found by review (2026-12-06): merging the numbers-with-a-unit rule into the numbers rule (one pattern with an
    optional unit) left the sign of the next number outside the mask, moving these templates (verdict-cache and
    label keys); the two rules, units first, are kept."""
    from rationad.templates import to_template

    assert to_template("retry in 30s-60 seconds") == "retry in {*} seconds"
    assert to_template("took 5ms+2 ticks") == "took {*} ticks"
    assert to_template("timeout 7m-5 left") == "timeout {*} left"
