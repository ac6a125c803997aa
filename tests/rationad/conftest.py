"""Fixtures shared by the daemon's unit tests."""

import pytest

from rationad import hdfs_kb


@pytest.fixture
def kb_file(tmp_path, monkeypatch):
    """A path the HDFS knowledge base is read from instead of the packaged file (not created: a test writes it, or
    leaves it missing); its caches are cleared before and after, so neither side sees the other's."""
    path = tmp_path / "hdfs_kb.json"
    monkeypatch.setattr(hdfs_kb, "KB_FILE", path)
    for f in (hdfs_kb._data, hdfs_kb.hdfs_templates, hdfs_kb.hdfs_pairs, hdfs_kb.match_hdfs):
        f.cache_clear()
    yield path
    for f in (hdfs_kb._data, hdfs_kb.hdfs_templates, hdfs_kb.hdfs_pairs, hdfs_kb.match_hdfs):
        f.cache_clear()
