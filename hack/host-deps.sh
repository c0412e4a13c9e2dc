#!/usr/bin/env bash
# Installs the host packages the real node and the image builds need, from Debian's archive,
# when they are missing: podman + buildah (image builds), runc (the node's runtime), the CNI
# plugins (bridge, host-local, loopback, portmap), iptables (kube-proxy), mmdebstrap + uidmap
# (the Debian base image), chromium + chromium-driver (the Open WebUI browser test). Called by `make test` and `make demo`; a no-op when all are there.
#
# Where it cannot install (not root, no apt-get), it prints one line and exits 0: the local
# cluster then runs KWOK-only and says why (e2e/cluster/up), and the real-node tests are
# skipped with that reason.
set -euo pipefail

# redis-server: the gateway's shared limit store, started for real by tests/gateway and bench/gateway.
PACKAGES=(podman buildah runc containernetworking-plugins iptables mmdebstrap uidmap chromium chromium-driver redis-server)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("${pkg}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ ${EUID} -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "host-deps: missing ${missing[*]} and cannot install them here (needs root and apt-get); the real node stays off" >&2
  exit 0
fi
echo "host-deps: installing ${missing[*]} from Debian's archive" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/slm-host-deps.log 2>&1; then
  # A stale package index: refresh it once and try again.
  apt-get update -q >>/tmp/slm-host-deps.log 2>&1 || true
  apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/slm-host-deps.log 2>&1 ||
    { echo "host-deps: apt-get install ${missing[*]} failed (log /tmp/slm-host-deps.log); the real node stays off" >&2; exit 0; }
fi
