from rationad.key_spread import KeySpread


def test_a_key_closed_on_two_partitions_is_a_split_session():
    k = KeySpread()
    assert k.seen(0, "blk_1") is None
    assert k.seen(0, "blk_1") is None  # the same partition again: a later session of the key, not a split
    assert k.seen(1, "blk_2") is None
    assert k.seen(1, "blk_1") == 0


def test_memory_per_partition_is_bounded_and_forgets_the_oldest():
    k = KeySpread(keys_per_partition=3)
    for key in ("a", "b", "c", "d"):
        k.seen(0, key)
    assert k.seen(1, "a") is None  # forgotten
    assert k.seen(1, "d") == 0


def test_a_revoked_partition_is_forgotten():
    k = KeySpread()
    k.seen(0, "x")
    k.drop(0)
    assert k.seen(1, "x") is None


def test_long_keys_are_remembered_by_digest_and_still_found():
    """Found by review: keys were held whole, 10,000 a partition, and a session key can be 64 KiB long."""
    spread = KeySpread()
    huge = "blk_" + "7" * 65_000
    assert spread.seen(0, huge) is None and spread.seen(1, huge) == 0
    assert spread.seen(2, huge[:-1] + "8") is None  # a different key
    assert all(len(k) <= 64 for keys in spread._recent.values() for k in keys)
