import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "rationad", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=60)


def test_schema_and_version():
    r = run("schema")
    assert r.returncode == 0 and json.loads(r.stdout)["properties"]["type"]["const"] == "rationad.verdict.v1"
    r = run("schema", "--config-schema")
    assert "kafka" in json.loads(r.stdout)["properties"]
    assert run("version").stdout.startswith("rationad ")


def test_check_config_offline_and_bad_config(tmp_path):
    r = run("check-config", "--config", "config.toml", "--offline")
    assert r.returncode == 0 and json.loads(r.stdout)["kafka"]["group_id"] == "rationad"
    bad = tmp_path / "bad.toml"
    bad.write_text("[output]\nemit_normal = 'sometimes'\n")
    r = run("check-config", "--config", str(bad), "--offline")
    assert r.returncode == 2 and "output.emit_normal" in r.stderr


def test_check_config_reports_unreachable_broker_and_missing_model(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[kafka]\nbootstrap_servers = '127.0.0.1:1'\n[model]\npath = '{tmp_path}/none'\n")
    r = run("check-config", "--config", str(cfg))
    assert r.returncode == 1
    assert "kafka.bootstrap_servers" in r.stderr and "model.path" in r.stderr


def test_daemon_package_imports_without_torch():
    code = ("import sys, rationad.cli, rationad.daemon, rationad.replay, rationad.judge, rationad.prompt;"
            "bad=[m for m in ('torch','vllm','transformers') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
