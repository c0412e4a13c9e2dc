# Shared by up, down and status: where the running cluster keeps its state, and its ports.
# Expects versions.env and lib.sh to be sourced first.
STATE="${SLM_CLUSTER_DIR:-${SLM_CACHE}/cluster}"
PKI="${STATE}/pki"
RUN="${STATE}/run"
LOGS="${STATE}/logs"
APISERVER_PORT="${SLM_APISERVER_PORT:-16443}"
ETCD_PORT="${SLM_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${SLM_ETCD_PEER_PORT:-12380}"
KCM_PORT="${SLM_KCM_PORT:-16257}"
SCHEDULER_PORT="${SLM_SCHEDULER_PORT:-16259}"
KWOK_PORT="${SLM_KWOK_PORT:-16247}"
declare -A COMPONENT_PORTS=(
  [etcd]="${ETCD_PORT}" [kube-apiserver]="${APISERVER_PORT}" [kube-controller-manager]="${KCM_PORT}"
  [kube-scheduler]="${SCHEDULER_PORT}" [kwok]="${KWOK_PORT}"
)
SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1"
# Start order; `down` stops them in reverse.
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kwok fake-provisioner"

kubeconfig_path() {  # the admin one is the cluster's KUBECONFIG
  if [[ "$1" == admin ]]; then echo "${STATE}/kubeconfig"; else echo "${PKI}/$1.kubeconfig"; fi
}

# True when the component's recorded pid is alive and still runs that binary (a reused pid
# runs something else).
running() {
  local pidfile="${RUN}/$1.pid" pid
  [[ -f "${pidfile}" ]] || return 1
  pid="$(<"${pidfile}")"
  [[ -n "${pid}" ]] && [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == */"$1"-* ]]
}
