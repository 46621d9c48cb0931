#!/usr/bin/env bash
# The end-to-end demo: set up, make the built-in dataset, train, evaluate, print a table.
# Extra flags go to `qtransformer demo` (e.g. --out runs/demo2, --preset smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/qtransformer demo "$@"
