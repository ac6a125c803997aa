"""Shared fixtures for the training tests: the real datasets (read-only) and small slices of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.dataset import DEFAULT_DATASETS as DATASETS


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not (DATASETS / "hdfs_sessions/hdfs_sessions.jsonl").is_file():
        pytest.skip("shared datasets not available")
    return DATASETS


@pytest.fixture(scope="session")
def hdfs_examples(datasets):
    from training.data_hdfs import load_rendered

    return load_rendered(datasets / "hdfs_sessions/hdfs_sessions.jsonl", limit=400)


@pytest.fixture(scope="session")
def template_examples(datasets):
    from training.data_templates import load_templates

    ex, _ = load_templates(datasets / "templates/bgl_templates_dev.csv", datasets / "rationanomaly/anomaly_patch.json",
                           "bgl")
    return ex
