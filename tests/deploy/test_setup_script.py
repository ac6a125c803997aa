"""``scripts/setup.sh``: what it refuses before it installs anything."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_setup_refuses_a_venv_folder_of_its_own_instead_of_linking_inside_it(tmp_path):
    """Found by review (2026-12-07), failing before its fix: with .venv a real folder (uv, an IDE, python -m venv),
    ``ln -sfn`` put the link inside it, setup said ready, and the demo and the tests ran that folder's interpreter."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                               "RATIONAD_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 1, done.stderr
    assert ".venv is a folder of its own" in done.stderr and "mv .venv .venv.mine" in done.stderr
    assert sorted(p.name for p in (tmp_path / ".venv").iterdir()) == ["bin"]  # nothing linked inside it
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())
