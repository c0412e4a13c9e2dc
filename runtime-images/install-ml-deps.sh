#!/usr/bin/env bash
# Installs the heavy ML dependencies (CPU builds) that the runtime-image tests need.
# Owned by the runtime-images work; a no-op until it pins them.
set -euo pipefail
PY="${1:-python3}"
: "$PY"
