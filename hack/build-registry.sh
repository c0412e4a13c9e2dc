#!/usr/bin/env bash
# Build the CNCF distribution `registry` (an OCI registry) from its Go module, cached by version
# outside the repo, so only the first run on a machine pays for the build. The export tests
# (tests/quantizer/test_export_targets.py) start it on 127.0.0.1 to push ORAS-style artifacts to.
# Usage: hack/build-registry.sh            prints the binary's path on success
set -euo pipefail

VERSION="${REGISTRY_VERSION:-v3.1.2}"
BIN_DIR="${SLM_CACHE_BIN:-${HOME}/.cache/slm-operator/bin}"
OUT="${BIN_DIR}/registry-${VERSION}"

if [[ -x "${OUT}" ]]; then
  echo "${OUT}"
  exit 0
fi
mkdir -p "${BIN_DIR}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
# distribution's go.mod has no replace directives, so `go install module@version` works.
GOBIN="${work}" GOFLAGS=-buildvcs=false nice -n 10 go install -ldflags "-s -w" \
  "github.com/distribution/distribution/v3/cmd/registry@${VERSION}" >&2
mv "${work}/registry" "${OUT}.tmp"
mv "${OUT}.tmp" "${OUT}"
echo "${OUT}"
