#!/bin/sh
# Build {{name}}.wasm: install componentize-py (pinned, hashes checked) into
# .venv once, then build the component. Set PYTHON to pick an interpreter.
set -eu
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
[ -x .venv/bin/componentize-py ] || .venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt
.venv/bin/componentize-py --quiet -d wit -w reconciler componentize --stub-wasi -p . app -o "${OUT:-{{name}}.wasm}"
echo "built ${OUT:-{{name}}.wasm}"
