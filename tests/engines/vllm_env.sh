#!/usr/bin/env bash
# Creates, once per machine, the virtualenv in which tests/engines/test_vllm_parser_compat.py checks
# the launcher's `vllm serve` arguments against vLLM's own argument parser.
#
# Why a separate venv: vLLM pins its own torch (0.33.0 -> torch 2.14.0), which cannot share the main
# .venv (CPU torch for the quantizer). The parser imports torch, and PyPI's Linux torch wheel links the
# CUDA runtime libraries, so torch's nvidia-* dependencies are installed too (no GPU is needed to
# import them). vLLM's GPU-kernel packages are left out: the parser never imports them.
#
# Usage: tests/engines/vllm_env.sh            -> prints the venv path on the last line
#        VLLM_VERSION=0.33.0 SLM_CACHE=/path tests/engines/vllm_env.sh
# Idempotent: a stamp keyed by the requirement files makes a second run a no-op; an interrupted run
# (no stamp) is wiped and redone.
set -euo pipefail

VLLM_VERSION="${VLLM_VERSION:-0.33.0}"
PYTHON="${PYTHON:-python3}"
CACHE="${SLM_CACHE:-$HOME/.cache/slm-operator}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQS="$HERE/vllm-requirements.txt"
CONSTRAINTS="$HERE/vllm-constraints.txt"
VENV="$CACHE/venv-vllm-$VLLM_VERSION"
KEY="$(cat "$REQS" "$CONSTRAINTS" | sha256sum | cut -c1-12)"
STAMP="$VENV/.complete-$KEY"

if [[ -f "$STAMP" ]]; then
  echo "$VENV"
  exit 0
fi

if ! grep -q "^vllm==$VLLM_VERSION\$" "$CONSTRAINTS"; then
  echo "vllm_env.sh: $CONSTRAINTS pins no vllm==$VLLM_VERSION; regenerate it for that version" >&2
  exit 2
fi

start=$(date +%s)
rm -rf "$VENV"
mkdir -p "$CACHE"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q pip==25.3
# vllm itself without its dependency list (which pulls the GPU kernels), then the rest pinned.
"$VENV/bin/python" -m pip install -q --no-deps "vllm==$VLLM_VERSION"
"$VENV/bin/python" -m pip install -q -r "$REQS" -c "$CONSTRAINTS"
"$VENV/bin/python" -c "from vllm.entrypoints.common.cli_args import make_arg_parser" >/dev/null
touch "$STAMP"
end=$(date +%s)
echo "vllm_env.sh: built $VENV in $((end - start)) s, $(du -sh "$VENV" | cut -f1)" >&2
echo "$VENV"
