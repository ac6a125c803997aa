import json
import subprocess
import sys
from pathlib import Path

import pytest

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


class _FakeModelServer:
    """A local HTTP server that answers /health 200 and everything else with ``status``, as a vLLM server behind a
    gateway that wants another API key (or does not serve the configured model) would."""

    def __init__(self, status: int, body: dict):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                code, payload = (200, {}) if self.path == "/health" else (status, body)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _server_config(tmp_path, url: str) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[kafka]\nbootstrap_servers = '127.0.0.1:1'\n"
                   f"[model]\nbackend = 'vllm-server'\nserver_url = '{url}'\nserved_model_name = 'rationad'\n"
                   f"api_key = 'k3y-value'\n")
    return cfg


def test_check_config_never_shows_credentials_of_the_server_url(tmp_path):
    r = run("check-config", "--config", str(_server_config(tmp_path, "http://alice:pa55word@127.0.0.1:1")))
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert "pa55word" not in out and "alice" not in out and "k3y-value" not in out, out
    assert json.loads(r.stdout)["model"]["server_url"] == "http://***@127.0.0.1:1"
    assert "model.server_url" in r.stderr and "http://***@127.0.0.1:1" in r.stderr, r.stderr


@pytest.mark.parametrize(("status", "body", "key"), [
    (401, {"error": {"message": "invalid api key"}}, "model.api_key"),
    (200, {"data": [{"id": "renamed"}]}, "model.served_model_name"),
])
def test_check_config_reports_a_refused_key_or_an_unserved_model(tmp_path, status, body, key):
    """vLLM's /health needs no key and names no model: check-config must ask /v1/models too."""
    server = _FakeModelServer(status, body)
    try:
        r = run("check-config", "--config", str(_server_config(tmp_path, f"http://127.0.0.1:{server.port}")))
    finally:
        server.close()
    assert r.returncode == 1
    assert [line for line in r.stderr.splitlines() if line.startswith(f"error: {key}")], r.stderr
    assert "k3y-value" not in r.stdout + r.stderr


def test_replay_checks_its_input_settings_before_the_model(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("2026-12-01 10:00:00 worker started\n")
    missing_model = str(tmp_path / "no-model")
    r = run("replay", str(log), "--dialect", "generic", "--model-path", missing_model)
    assert r.returncode == 2 and "input.key_regex" in r.stderr and "window_lines" in r.stderr, r.stderr
    # Fixed windows over one file need no key: the input settings pass, and what fails next is the model path.
    r = run("replay", str(log), "--dialect", "generic", "--window-lines", "100", "--model-path", missing_model)
    assert r.returncode == 2 and "key_regex" not in r.stderr and "model.path" in r.stderr, r.stderr


def test_every_replay_option_has_a_help_line():
    r = run("replay", "--help")
    assert r.returncode == 0
    options = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("--")]
    assert options and all(len(ln.split(None, 2)) >= 2 for ln in options), r.stdout
    assert "--window-secs WINDOW_SECS" in r.stdout and "seconds of event time" in r.stdout
