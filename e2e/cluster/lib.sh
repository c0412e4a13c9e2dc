# Shared by build, up and down: where the cached binaries live and what they are called.
# Expects versions.env to be sourced first.
SLM_CACHE="${SLM_CACHE:-${HOME}/.cache/slm-operator}"
SLM_BIN="${SLM_CACHE}/bin"
SLM_SRC="${SLM_CACHE}/src"
# A directory of plain names (kubectl, helm, ...) linking to the versioned binaries: for PATH.
SLM_ACTIVE_BIN="${SLM_BIN}/active"
_SLM_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The cache key of each binary: its upstream version (the provisioner: also its source hash).
bin_version() {
  case "$1" in
    etcd) echo "${ETCD_VERSION}" ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
      echo "${KUBERNETES_VERSION}" ;;
    containerd | containerd-shim-runc-v2 | ctr) echo "${CONTAINERD_VERSION}" ;;
    pause) echo "$(sha256sum "${_SLM_LIB_DIR}/pause.c" | cut -c1-12)" ;;
    kwok) echo "${KWOK_VERSION}" ;;
    helm) echo "${HELM_VERSION}" ;;
    prometheus) echo "${PROMETHEUS_VERSION}" ;;
    prometheus-operator | prometheus-config-reloader) echo "${PROMETHEUS_OPERATOR_VERSION}" ;;
    prometheus-adapter) echo "${PROMETHEUS_ADAPTER_VERSION}" ;;
    kube-state-metrics) echo "${KUBE_STATE_METRICS_VERSION}" ;;
    apiserver-proxy) echo "$(sha256sum "${_SLM_LIB_DIR}/apiserver-proxy/main.go" | cut -c1-12)" ;;
    fake-provisioner)
      echo "${KUBERNETES_VERSION}-$(cat "${_SLM_LIB_DIR}"/provisioner/*.go | sha256sum | cut -c1-12)" ;;
    *) echo "unknown binary $1" >&2; return 1 ;;
  esac
}

bin_path() { echo "${SLM_BIN}/$1-$(bin_version "$1")"; }

SLM_BINARIES="etcd kube-apiserver kube-controller-manager kube-scheduler kubectl fake-provisioner kwok helm"
# The real node's binaries (built by `build`, used by `up` when containers can run here).
SLM_NODE_BINARIES="kubelet kube-proxy containerd containerd-shim-runc-v2 ctr pause apiserver-proxy"
# Monitoring for the autoscaling e2e (Prometheus runs as a pod on the real node from an image
# of this binary; the operator and the adapter run as processes beside the control plane).
SLM_MONITORING_BINARIES="prometheus prometheus-operator prometheus-config-reloader prometheus-adapter kube-state-metrics"

# Point ${SLM_ACTIVE_BIN}/<name> at the binaries of the pinned versions (those that exist).
link_active_bin() {
  mkdir -p "${SLM_ACTIVE_BIN}"
  local name
  for name in ${SLM_BINARIES} ${SLM_NODE_BINARIES} ${SLM_MONITORING_BINARIES}; do
    if [[ -x "$(bin_path "${name}")" ]]; then
      ln -sfn "$(bin_path "${name}")" "${SLM_ACTIVE_BIN}/${name}"
    fi
  done
}

# Names of the pinned binaries (default: all) that are not built yet (empty when all are there).
missing_binaries() {
  local name out=()
  for name in ${*:-${SLM_BINARIES}}; do
    [[ -x "$(bin_path "${name}")" ]] || out+=("${name}")
  done
  [[ -f "$(kwok_stages_path)" ]] || out+=("kwok-stages")
  echo "${out[*]-}"
}

# KWOK's stage definitions, copied from the pinned KWOK release by `build`.
kwok_stages_path() { echo "${SLM_CACHE}/share/kwok-stages-${KWOK_VERSION}.yaml"; }

# Prometheus Operator's CRDs, copied from the pinned release by `build`.
promop_crds_path() { echo "${SLM_CACHE}/share/prometheus-operator-crds-${PROMETHEUS_OPERATOR_VERSION}.yaml"; }
