#!/usr/bin/env bash
# Fresh-machine set-up: Debian's Fashion-MNIST files and a virtual environment at .venv.
# Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import redy_jax, pytest, hypothesis, onnxruntime" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
  # PYTHONWARNINGS: setuptools' editable-install notice is not for our users
  PYTHONWARNINGS=ignore .venv/bin/pip install -q -e '.[test,onnx]'
  .venv/bin/python -c "import redy_jax, onnxruntime"  # the install must have worked
  touch .venv/.installed
fi
