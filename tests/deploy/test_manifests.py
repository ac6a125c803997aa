"""deploy/ agrees with the daemon: the systemd unit, the env file, the Kubernetes manifests and the Dockerfiles use
real CLI flags and real configuration keys, and their timeouts sit above the drain budget.

Schema validation of the rendered manifests, ``systemd-analyze`` and hadolint run in ``scripts/check_deploy.sh``;
these tests need only the project's own environment.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from rationad.cli import build_parser
from rationad.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "rationad.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "rationad.env.example"
K8S = DEPLOY / "k8s"
WORKLOADS = ("Deployment", "StatefulSet")
SECRET_KEYS = {"RATIONAD_KAFKA__SASL_PASSWORD", "RATIONAD_KAFKA__SASL_USERNAME", "RATIONAD_MODEL__API_KEY"}


def unit() -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # keys are case-sensitive
    cp.read_string(UNIT.read_text())
    return cp


def unit_values(key: str) -> list[str]:
    """All values of a (repeatable) [Service] key, in order."""
    out = []
    for line in UNIT.read_text().splitlines():
        if line.startswith(f"{key}="):
            out.append(line.split("=", 1)[1])
    return out


def env_key(name: str) -> tuple[str, str]:
    """``RATIONAD_KAFKA__SASL_PASSWORD`` -> ("kafka", "sasl_password"), checked against the Settings model."""
    m = re.fullmatch(r"RATIONAD_([A-Z]+)__([A-Z_]+)", name)
    assert m, f"{name} is not RATIONAD_<SECTION>__<KEY>"
    section, key = m.group(1).lower(), m.group(2).lower()
    assert section in Settings.model_fields, f"{name}: no [{section}] section"
    assert key in Settings.model_fields[section].annotation.model_fields, f"{name}: no key {section}.{key}"
    return section, key


def drain_secs(config: Path) -> float:
    return load_settings(config).delivery.drain_timeout_secs


# ---- systemd ------------------------------------------------------------------------------------------------
def test_unit_is_notify_with_watchdog_and_hardening():
    s = unit()["Service"]
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert int(s["WatchdogSec"]) > 0
    assert s["Restart"] == "on-failure"
    assert s["EnvironmentFile"] == "-/etc/rationad/rationad.env"
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "StateDirectory": "rationad"}.items():
        assert s[key] == value, key
    assert "@system-service" in unit_values("SystemCallFilter")
    assert s["DynamicUser"] == "yes" or s.get("User")
    assert re.fullmatch(r"\d+[KMGT]", s["MemoryMax"])


def test_unit_stop_timeout_above_drain_budget():
    s = unit()["Service"]
    stop = int(s["TimeoutStopSec"])
    for config in (ROOT / "config.toml", K8S / "base" / "config.toml"):
        # drain + 45 s bounds the stop with the in-process engine and the broker unreachable (docs/operations.md)
        assert stop >= drain_secs(config) + 45, f"TimeoutStopSec {stop} leaves no room after the drain ({config})"
    assert stop > Settings().delivery.drain_timeout_secs


def test_unit_command_parses_with_the_cli():
    (command,) = unit_values("ExecStart")
    argv = shlex.split(command)
    assert argv[0] == "/opt/rationad/venv/bin/rationad"
    args = build_parser().parse_args(argv[1:])  # SystemExit on an unknown flag
    assert args.config == "/etc/rationad/config.toml" and args.command == "run"


def test_a_configuration_error_is_not_restarted():
    """Found by review: ``check-config`` in ``ExecStartPre`` exited 2 on a typo, but systemd applies
    ``RestartPreventExitStatus`` to the main process only, so ``Restart=on-failure`` restarted the unit every 5 s for
    ever. Only the main process (``run``, which validates first and exits 2) may report a configuration error."""
    assert unit_values("ExecStartPre") == []
    assert unit_values("RestartPreventExitStatus") == ["2"] and unit_values("Restart") == ["on-failure"]


def test_env_example_keys_exist_and_validate(monkeypatch, tmp_path):
    """Every RATIONAD_* line of the example (commented or not) is a real key, and all of them together validate (TLS
    files are loaded by validation: the example's paths get a real certificate here)."""
    import subprocess

    pairs = re.findall(r"^#?(RATIONAD_\w+)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert len(pairs) >= 8
    for name, value in pairs:
        env_key(name)
        if name.startswith("RATIONAD_KAFKA__SSL_"):
            value = str(tmp_path / Path(value).name)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                            str(tmp_path / "key.pem"), "-out", value, "-days", "2", "-subj", "/CN=ca"],
                           check=True, capture_output=True)
        monkeypatch.setenv(name, value)
    settings = load_settings(ROOT / "config.toml")
    assert settings.kafka.security_protocol == "SASL_SSL" and settings.model.backend == "vllm-server"
    assert settings.kafka.sasl_password.get_secret_value() == "change-me"
    assert "change-me" not in json.dumps(settings.redacted())


# ---- Kubernetes ---------------------------------------------------------------------------------------------
def k8s_docs() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def containers(doc: dict) -> list[dict]:
    return doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) or []


def test_k8s_env_names_are_config_keys():
    names = [(p, e) for p, d in k8s_docs() for c in containers(d) for e in c.get("env", [])]
    rationad = [(p, e) for p, e in names if e["name"].startswith("RATIONAD_")]
    assert len(rationad) >= 8
    for path, env in rationad:
        env_key(env["name"])
        if env["name"] in SECRET_KEYS:
            assert "secretKeyRef" in env.get("valueFrom", {}), f"{path}: {env['name']} must come from a Secret"


def test_k8s_configs_validate_with_overlay_env(monkeypatch):
    """The base config.toml validates alone and with each overlay's literal RATIONAD_* values applied."""
    base = K8S / "base" / "config.toml"
    cfg = load_settings(base)
    assert cfg.server.host == "0.0.0.0" and cfg.log.format == "json"
    for overlay in sorted((K8S / "overlays").iterdir()):
        with monkeypatch.context() as m:
            for path, doc in k8s_docs():
                if overlay in path.parents:
                    for c in containers(doc):
                        for e in c.get("env", []):
                            if e["name"].startswith("RATIONAD_"):
                                m.setenv(e["name"], e.get("value", "secret-from-k8s"))
            s = load_settings(base)
            assert s.model.backend == ("vllm-engine" if overlay.name == "dev" else "vllm-server"), overlay.name


def test_k8s_daemon_grace_period_probes_and_port():
    cfg = load_settings(K8S / "base" / "config.toml")
    dep = next(d for p, d in k8s_docs() if d["kind"] == "StatefulSet" and p.parent.name == "base")
    pod = dep["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= cfg.delivery.drain_timeout_secs + 25
    (c,) = pod["containers"]
    assert c["args"] == ["run", "--config", "/etc/rationad/config.toml"]
    build_parser().parse_args(c["args"])
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": cfg.server.port}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/startedz"  # not the model's health (see test_daemon)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_k8s_daemon_is_a_statefulset_with_its_pod_name_as_static_instance_id():
    """Static membership needs an id unique per pod and stable across its restarts and rollouts: a StatefulSet's
    pod name (a Deployment's changes on every rollout); its serviceName is the headless metrics Service."""
    base = {d["kind"]: d for p, d in k8s_docs() if p.parent.name == "base"}
    sts = base["StatefulSet"]
    assert "Deployment" not in base
    (c,) = containers(sts)
    env = next(e for e in c["env"] if e["name"] == "RATIONAD_KAFKA__GROUP_INSTANCE_ID")
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert sts["spec"]["serviceName"] == base["Service"]["metadata"]["name"]
    assert base["Service"]["spec"]["clusterIP"] == "None"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    # The prod patch reaches the StatefulSet whatever kind its file names (kustomize target).
    prod = yaml.safe_load((K8S / "overlays" / "prod" / "kustomization.yaml").read_text())
    patch = next(p for p in prod["patches"] if p["path"] == "daemon-server.yaml")
    assert patch["target"]["kind"] == "StatefulSet" and patch["target"]["name"] == "rationad"


def test_daemon_memory_limit_without_the_engine_is_1gib():
    """The daemon alone (model served elsewhere) is bounded at 1 GiB (BENCHMARKS.md section 5, bench/memory.py);
    only the in-process engine (dev overlay, systemd default) raises it."""
    sts = next(d for p, d in k8s_docs() if d["kind"] == "StatefulSet" and p.parent.name == "base")
    assert containers(sts)[0]["resources"]["limits"]["memory"] == "1Gi"
    prod = next(d for p, d in k8s_docs() if p.parent.name == "prod" and d["metadata"]["name"] == "rationad"
                and d["kind"] in WORKLOADS)
    assert "resources" not in containers(prod)[0], "prod must keep the base's 1Gi limit"
    assert re.search(r"MemoryMax(=| to )1G", UNIT.read_text()), "the unit documents the 1G drop-in for vllm-server"


def test_unit_sets_the_host_name_as_static_instance_id():
    assert "RATIONAD_KAFKA__GROUP_INSTANCE_ID=%H" in unit_values("Environment")
    env_key("RATIONAD_KAFKA__GROUP_INSTANCE_ID")


def test_replica_counts_document_the_partition_limit():
    for path, doc in k8s_docs():
        if doc.get("kind") in WORKLOADS and doc["metadata"]["name"] == "rationad" and "replicas" in doc["spec"]:
            line = next(ln for ln in path.read_text().splitlines() if re.match(r"\s+replicas:", ln))
            assert "replicas <= input partitions" in line, f"{path}: {line.strip()}"


def test_prod_vllm_server_requests_a_gpu_and_serves_the_pvc_model():
    docs = [d for p, d in k8s_docs() if p.parent.name == "prod"]
    vllm = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "rationad-vllm")
    (c,) = containers(vllm)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["command"] == ["vllm", "serve"] and c["args"][0] == "/models/default"
    claim = vllm["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert any(d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim for d in docs)
    daemon = next(d for d in docs if d["kind"] in WORKLOADS and d["metadata"]["name"] == "rationad")
    env = {e["name"]: e.get("value") for e in containers(daemon)[0]["env"]}
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "rationad-vllm")
    assert env["RATIONAD_MODEL__SERVER_URL"] == f"http://rationad-vllm:{service['spec']['ports'][0]['port']}"
    assert daemon["spec"]["replicas"] == 3


def test_prod_overlay_ships_the_released_model_s_manifest():
    """Found by review, failing before its fix: the overlay's manifest said 0.1.0 with no prompt version, so a daemon
    serving the released 0.3.2 from the PVC stamped its events 0.1.0, keyed its cache so, and served without the
    unfinished note, the daemon's walk and the rule sentence the model was trained with (the threshold still
    0.3.2's). The daemon's identity and prompt come from this file in that overlay."""
    from rationad.prompt import trained_with

    shipped = json.loads((DEPLOY / "k8s/overlays/prod/model-manifest.json").read_text())
    released = json.loads((ROOT / "models/rationad-smollm2-135m-lora/manifest.json").read_text())
    assert shipped == released
    assert trained_with(shipped["prompt_version"], "walk")


# ---- Dockerfiles --------------------------------------------------------------------------------------------
def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    found = re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.MULTILINE)
    return [(m.group(1).upper(), m.group(2).strip()) for m in found
            if not m.group(0).lstrip().startswith("#")]


@pytest.mark.parametrize("name", ["daemon.Dockerfile", "training.Dockerfile"])
def test_dockerfiles_multi_stage_non_root_exec_form(name):
    ins = instructions(DEPLOY / "docker" / name)
    assert sum(1 for k, _ in ins if k == "FROM") >= 2, "multi-stage"
    users = [v for k, v in ins if k == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "runs as a non-root user"
    entry = [v for k, v in ins if k == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]), "exec-form ENTRYPOINT"


def test_daemon_image_has_no_torch_by_default():
    ins = instructions(DEPLOY / "docker" / "daemon.Dockerfile")
    assert ("ARG", 'EXTRAS=""') in ins
    assert json.loads(dict(ins)["ENTRYPOINT"]) == ["rationad"]
    cmd = json.loads([v for k, v in ins if k == "CMD" and v.startswith("[")][-1])
    assert cmd == ["run", "--config", "/etc/rationad/config.toml"]
    build_parser().parse_args(cmd)
    run = " ".join(v for k, v in ins if k == "RUN")
    assert "torch" not in run.replace("TORCH_INDEX_URL", "").replace("torchvision torchaudio torchcodec", "")
    training = " ".join(v for k, v in instructions(DEPLOY / "docker" / "training.Dockerfile") if k == "RUN")
    assert '".[vllm,train]"' in training
