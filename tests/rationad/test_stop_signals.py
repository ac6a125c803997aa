"""A stop while ``rationad run`` is still starting ends it cleanly (exit 0, logged), as systemd and Kubernetes expect.

Found in CI: the kill -9 failure test starts the daemon a last time and stops it as soon as every block has its
outcome; when the earlier runs had already done all the work, SIGTERM came while Python was importing and the daemon
died of it (exit -15, nothing logged). Found again: ``cli.main`` held the signals, but only after ``rationad.cli``
and its config module (pydantic) were imported, a second or more on a loaded machine; ``python -m rationad`` and
the ``rationad`` command now hold them before importing anything heavy."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The signal arrives at a fixed moment of start-up: once the config is read, before any event loop exists.
SIGNAL_AT_CONFIG = """
import os, signal, sys
import rationad.cli as cli
read = cli._settings
def read_then_signal(*args, **kwargs):
    settings = read(*args, **kwargs)
    os.kill(os.getpid(), signal.{sig})
    return settings
cli._settings = read_then_signal
sys.exit(cli.main(["run", "--config", sys.argv[1]]))
"""


# The signal arrives while the command line module is still being imported (its config module's import starts).
SIGNAL_AT_IMPORT = """
import os, signal, sys
class SignalAtConfigImport:
    def find_spec(self, name, path=None, target=None):
        if name == "rationad.config":
            os.kill(os.getpid(), signal.{sig})
        return None
sys.meta_path.insert(0, SignalAtConfigImport())
sys.argv = ["rationad", "run", "--config", sys.argv[1]]
from rationad.__main__ import main
sys.exit(main())
"""


def _config(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = tmp_path / "c.toml"  # nothing answers here: a daemon that tried to start would fail or hang, not exit 0
    cfg.write_text(f"[kafka]\nbootstrap_servers = '127.0.0.1:1'\n[model]\nbackend = 'vllm-server'\n"
                   f"server_url = 'http://127.0.0.1:1'\npath = '{model}'\n[log]\nformat = 'json'\n")
    return cfg


@pytest.mark.parametrize("code", [SIGNAL_AT_CONFIG, SIGNAL_AT_IMPORT], ids=["config-read", "importing"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stop_during_start_up_exits_cleanly_without_starting_anything(tmp_path, sig, code):
    cfg = _config(tmp_path)
    r = subprocess.run([sys.executable, "-c", code.format(sig=sig), str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    logged = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    assert [(e["event"], e.get("signal"), e.get("during")) for e in logged] == [("stop_requested", sig, "start-up")]


def test_other_commands_keep_the_default_signal_handling():
    """Only ``run`` holds the signals: ``replay`` or ``tail`` stopped by SIGTERM ends as any command does."""
    code = ("import signal, rationad.cli as cli; cli.main(['version']);"
            "print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().endswith("True"), r.stdout + r.stderr
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # this process untouched too
