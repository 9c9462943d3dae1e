#!/usr/bin/env bash
# QVidCap's one entry point on a local machine.
#
#   ./run_all.sh                      set up (first time) and run the whole study on the default profile
#   ./run_all.sh test                 set up (first time) and run the test suite
#   ./run_all.sh slow                 the slow tests too (full-size dry run of the GPU profile on CPU)
#   ./run_all.sh setup                only create the virtual environment
#   ./run_all.sh gpu-check            time the GPU profile at real sizes (random weights) -> outputs/gpu_check.json;
#                                     without a GPU: the same code at tiny sizes on the CPU (measures nothing on a GPU)
#   ./run_all.sh study --profile smoke --set "train.epochs=2" --from 03
#
# The first run creates .venv (torch is pinned here, for this machine only; Colab and Kaggle keep
# their own) and a Jupyter kernel named "qvidcap" inside it, which papermill uses.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${QVIDCAP_VENV:-.venv}"
PY="$VENV/bin/python"
# the torch pair that installs offline here; override with QVIDCAP_TORCH="" to keep an existing torch
TORCH_SPEC="${QVIDCAP_TORCH-torch==2.14.1 torchvision==0.29.1}"

setup() {
  local stamp="$VENV/.qvidcap-setup"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then return; fi
  echo "== setting up $VENV (first run only)"
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  if [ -n "$TORCH_SPEC" ]; then "$PY" -m pip install -q $TORCH_SPEC; fi
  "$PY" -m pip install -q -e ".[lab,offline,test]"
  "$PY" -m ipykernel install --sys-prefix --name qvidcap --display-name "Python (qvidcap)" >/dev/null
  touch "$stamp"
}

study() {
  # the loop over notebooks lives in qvidcap/runtime/study.py (the Kaggle kernel runs the same one)
  local args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --profile|--set|--from|--to|--deadline-hours) args+=("$1" "$2"); shift 2 ;;
      *) echo "unknown option $1 (expected --profile, --set, --from, --to, --deadline-hours)" >&2; exit 2 ;;
    esac
  done
  "$PY" -m qvidcap.runtime.study "${args[@]}"
}

cmd="${1:-study}"
case "$cmd" in
  setup) setup ;;
  study) shift || true; setup; study "$@" ;;
  test) shift; setup; exec "$PY" -m pytest "$@" ;;
  slow) shift; setup; exec "$PY" -m pytest -m slow "$@" ;;
  gpu-check) shift; setup; exec "$PY" -m qvidcap.planning.gpu_check "$@" ;;
  --*) setup; study "$@" ;;
  *) echo "usage: ./run_all.sh [study|test|slow|gpu-check|setup] [options]" >&2; exit 2 ;;
esac
