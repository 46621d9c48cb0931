#!/usr/bin/env bash
# Set up, lint, then run the test suite. Extra flags go to pytest (e.g. -k resume, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .  # the lint gate: pyflakes, import order, bugbear ([tool.ruff] in pyproject.toml)
.venv/bin/python -m pytest -q "$@"
