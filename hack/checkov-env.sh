#!/usr/bin/env bash
# Creates (once) a separate virtualenv for checkov outside the repo: checkov pins many
# packages of its own and must not share the project's environment. Prints its bin dir.
set -euo pipefail
CHECKOV_VERSION=3.3.30
DIR="${SLM_CACHE:-${HOME}/.cache/slm-operator}/venv-checkov-${CHECKOV_VERSION}"
if [[ ! -x "${DIR}/bin/checkov" ]]; then
  python3 -m venv "${DIR}" >&2
  "${DIR}/bin/pip" install -q "checkov==${CHECKOV_VERSION}" >&2
fi
echo "${DIR}/bin"
