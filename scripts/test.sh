#!/usr/bin/env bash
# Set up, then run the test suite. Extra flags go to pytest (e.g. -k resume, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
