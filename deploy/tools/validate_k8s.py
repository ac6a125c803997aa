"""Validate rendered Kubernetes manifests offline: schemas, then rationad's deployment policy.

Run by ``scripts/check_deploy.sh`` in its tools virtualenv (``kubernetes-validate``, which ships the Kubernetes
JSON schemas, and PyYAML); not part of the ``rationad`` package.

    python validate_k8s.py --k8s-version 1.29.0 --k8s-version 1.37.0 --crd-out crds.json rendered/*.yaml

1. Every built-in object must validate **strictly** (unknown fields are errors) against each requested
   Kubernetes version. A deliberately broken Deployment is checked first, so a validator that accepts everything
   fails the run instead of passing it.
2. Prometheus Operator objects (``monitoring.coreos.com``) have no schema in that package: they are written to
   ``--crd-out`` (JSON) for ``validate_monitoring.mjs``, which checks them against the operator's CRD schemas.
   Any other kind without a schema is an error.
3. Policy (what the runbook promises): non-root, read-only root filesystem, no privilege escalation, memory limits,
   probes on the daemon's health endpoints and port, a grace period above ``delivery.drain_timeout_secs``, SASL
   credentials only from Secrets, a PodDisruptionBudget per Deployment or StatefulSet, GPU requests on the model
   server, and static group membership for the daemon (a StatefulSet whose pod name is kafka.group_instance_id).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tomllib
from pathlib import Path

import yaml
from kubernetes_validate import utils as kv

CRD_GROUP = "monitoring.coreos.com/"
DAEMON = "rationad"
WORKLOADS = ("Deployment", "StatefulSet")


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def name(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def schema_errors(doc: dict, version: str) -> str | None:
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        return f"{path}: {exc.message}"
    except kv.SchemaNotFoundError:
        return "no schema for this kind"
    return None


def self_test(version: str) -> None:
    """The validator must reject an unknown field and a wrong type, or it proves nothing."""
    bad = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i", "livenessProbe": {"httpGet": {"path": "/", "port": 1}},
                                     "resourcez": {}}]}}},
    }
    if schema_errors(bad, version) is None:
        sys.exit("validate_k8s: self-test failed: a Deployment with an unknown field passed strict validation")
    wrong_type = copy.deepcopy(bad)
    del wrong_type["spec"]["template"]["spec"]["containers"][0]["resourcez"]
    if schema_errors(wrong_type, version) is not None:
        sys.exit("validate_k8s: self-test failed: a valid Deployment did not validate")
    wrong_type["spec"]["replicas"] = "three"
    if schema_errors(wrong_type, version) is None:
        sys.exit("validate_k8s: self-test failed: replicas: 'three' passed validation")


def config_of(docs: list[dict]) -> dict | None:
    for d in docs:
        if d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {}):
            return tomllib.loads(d["data"]["config.toml"])
    return None


def static_membership(workload: dict, container: dict, where: str) -> list[str]:
    """The daemon's kafka.group_instance_id must be unique per pod and stable across its restarts: the pod name of a
    StatefulSet (a literal value would be shared by every replica, which then fence each other; a Deployment's pod
    names change on every rollout, leaving static members behind until their session times out)."""
    env = next((e for e in container.get("env", []) if e["name"] == "RATIONAD_KAFKA__GROUP_INSTANCE_ID"), None)
    if env is None:
        return [f"{where}: no RATIONAD_KAFKA__GROUP_INSTANCE_ID (static membership: the pod name)"]
    field = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if field != "metadata.name":
        return [f"{where}: RATIONAD_KAFKA__GROUP_INSTANCE_ID must come from fieldRef metadata.name (unique per pod)"]
    if workload["kind"] != "StatefulSet":
        return [f"{where}: static membership needs stable pod names: run the daemon as a StatefulSet"]
    return []


def policy(docs: list[dict], source: str) -> list[str]:
    problems: list[str] = []
    cfg = config_of(docs)
    if cfg is None:
        return [f"{source}: no ConfigMap with config.toml"]
    drain = float(cfg.get("delivery", {}).get("drain_timeout_secs", 30))
    port = int(cfg.get("server", {}).get("port", 9464))
    if cfg.get("server", {}).get("host") not in ("0.0.0.0", "::"):
        problems.append(f"{source}: config.toml server.host must be 0.0.0.0 in a pod (probes come from the kubelet)")
    deployments = [d for d in docs if d["kind"] in WORKLOADS]
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for dep in deployments:
        where = f"{source}: {name(dep)}"
        labels = dep["spec"]["selector"]["matchLabels"]
        if not any(p["spec"].get("selector", {}).get("matchLabels") == labels for p in pdbs):
            problems.append(f"{where}: no PodDisruptionBudget selects its pods")
        pod = dep["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod securityContext.runAsNonRoot must be true")
        for c in pod["containers"]:
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cw}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cw}: allowPrivilegeEscalation must be false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{cw}: capabilities must drop ALL")
            if not c.get("resources", {}).get("limits", {}).get("memory"):
                problems.append(f"{cw}: no memory limit")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in c:
                    problems.append(f"{cw}: no {probe}")
            for env in c.get("env", []):
                secret = "SASL_PASSWORD" in env["name"] or env["name"].endswith("API_KEY")
                if secret and "secretKeyRef" not in env.get("valueFrom", {}):
                    problems.append(f"{cw}: {env['name']} must come from a Secret (secretKeyRef)")
        if dep["metadata"]["name"] == DAEMON:
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if grace < drain + 25:  # the shutdown after the drain, bounded (rationad.daemon.CLOSE_SECS and the rest)
                problems.append(f"{where}: terminationGracePeriodSeconds {grace} < drain_timeout_secs {drain} + 25 s")
            c = pod["containers"][0]
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            expected = {"startupProbe": "/startedz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
            for probe, path in expected.items():
                get = c.get(probe, {}).get("httpGet", {})
                probe_port = ports.get(get.get("port"), get.get("port"))
                if get.get("path") != path or probe_port != port:
                    problems.append(f"{where}: {probe} must GET {path} on server.port {port}, "
                                    f"not {get.get('path')} on {probe_port}")
            env = {e["name"] for e in c.get("env", [])}
            if "RATIONAD_KAFKA__SASL_PASSWORD" not in env:
                problems.append(f"{where}: no RATIONAD_KAFKA__SASL_PASSWORD from a Secret")
            problems += static_membership(dep, c, where)
        gpu = any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in pod["containers"])
        if dep["metadata"]["name"] != DAEMON and "vllm" in dep["metadata"]["name"] and not gpu:
            problems.append(f"{where}: the vLLM server must request nvidia.com/gpu")
    if not any(d["metadata"]["name"] == DAEMON for d in deployments):
        problems.append(f"{source}: no {DAEMON} workload ({' or '.join(WORKLOADS)})")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--k8s-version", action="append", required=True)
    ap.add_argument("--crd-out", type=Path, required=True)
    ap.add_argument("--no-policy", action="append", default=[], help="file names to skip the policy checks for")
    args = ap.parse_args()
    for v in args.k8s_version:
        self_test(v)
    failures = 0
    crds: list[dict] = []
    for path in args.files:
        docs = load(path)
        checked = 0
        for doc in docs:
            if doc.get("apiVersion", "").startswith(CRD_GROUP):
                crds.append({"source": path.name, "doc": doc})
                continue
            for v in args.k8s_version:
                err = schema_errors(doc, v)
                if err:
                    print(f"FAIL {path.name}: {name(doc)} against Kubernetes {v}: {err}")
                    failures += 1
            checked += 1
        problems = [] if path.name in args.no_policy else policy(docs, path.name)
        for p in problems:
            print(f"FAIL policy {p}")
        failures += len(problems)
        print(f"{path.name}: {checked} objects valid against Kubernetes {', '.join(args.k8s_version)} (strict); "
              f"{sum(1 for c in crds if c['source'] == path.name)} monitoring.coreos.com objects passed on; "
              f"policy {'skipped' if path.name in args.no_policy else f'{len(problems)} problem(s)'}")
    args.crd_out.write_text(json.dumps(crds))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
