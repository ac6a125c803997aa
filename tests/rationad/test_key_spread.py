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
