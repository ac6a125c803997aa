#!/usr/bin/env bash
# Run the whole test suite: set up (cached), validate the deploy files, then pytest (unit + integration tests with
# a real noida-db broker and real vLLM on CPU). Extra arguments go to pytest (e.g. -m "not integration").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -x scripts/check_deploy.sh ]; then scripts/check_deploy.sh; fi
exec .venv/bin/python -m pytest -ra --durations=15 "$@"
