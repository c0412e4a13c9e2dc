#!/usr/bin/env bash
# Build promtool (Prometheus' rule checker and rule unit-test runner) from its Go module,
# cached by version outside the repo, so only the first run on a machine pays for the build.
# Independent of e2e/cluster: tests/test_observability.py uses it when it is there.
# Usage: hack/build-promtool.sh            prints the binary's path on success
set -euo pipefail

# Prometheus v3.x is published to the Go module proxy as v0.3xx.y (v3.16.0 -> v0.316.0).
VERSION="${PROMTOOL_VERSION:-v0.316.0}"
BIN_DIR="${SLM_CACHE_BIN:-${HOME}/.cache/slm-operator/bin}"
OUT="${BIN_DIR}/promtool-${VERSION}"

if [[ -x "${OUT}" ]]; then
  echo "${OUT}"
  exit 0
fi
mkdir -p "${BIN_DIR}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
minor="${VERSION#v0.}"                       # 316.0
release="v${minor:0:1}.$((10#${minor:1:2})).${minor#*.}"   # v3.16.0
# prometheus' go.mod has no replace directives, so `go install module@version` works.
GOBIN="${work}" GOFLAGS=-buildvcs=false nice -n 10 go install \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=${release#v}" \
  "github.com/prometheus/prometheus/cmd/promtool@${VERSION}" >&2
mv "${work}/promtool" "${OUT}.tmp"
mv "${OUT}.tmp" "${OUT}"
echo "${OUT}"
