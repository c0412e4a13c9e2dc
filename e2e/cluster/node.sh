# The real node: containerd + runc + CNI bridge + kubelet + kube-proxy on this host, beside the
# KWOK nodes. Sourced by `up` and `down` (after versions.env, lib.sh and cluster.sh).
#
# Facts this works around (each measured on this machine kind):
# - podman/containerd on hybrid cgroups: crun refuses ("cgroups in hybrid mode not supported"),
#   runc with the cgroupfs driver works; the kubelet needs failCgroupV1: false.
# - The kernel forbids lowering oom_score_adj ("failed to update /proc/self/oom_score_adj:
#   Permission denied" from runc for Guaranteed pods, -997): runc is called through
#   runc-wrapper, which raises a negative process.oomScoreAdj to the current value.
# - The kubelet and kube-proxy default to oomScoreAdj -999: set to 0 for the same reason.
# - registry.k8s.io/pause cannot be pulled: a static pause binary (pause.c) is imported under
#   the name containerd expects.
# - kubectl logs/exec/port-forward need a routable node address: a dummy interface (or an
#   empty bridge where the kernel lacks the dummy module).
#
# The node is tainted and labelled (REAL_NODE_TAINT, REAL_NODE_LABEL) so that only pods that
# ask for it land there; KWOK's simulated nodes keep every other test's pods.

NODE_NAME="${SLM_NODE_NAME:-slm-node-0}"
# Addresses nothing else on a dev machine or CI host uses (checked by `node_supported`).
NODE_IP="${SLM_NODE_IP:-10.231.0.1}"
NODE_IFACE="slm-node0"
POD_BRIDGE="slmbr0"
POD_CIDR="${SLM_POD_CIDR:-10.231.64.0/24}"
POD_GATEWAY="${POD_CIDR%.*}.1"
KUBELET_PORT="${SLM_KUBELET_PORT:-16250}"
KUBELET_HEALTHZ_PORT="${SLM_KUBELET_HEALTHZ_PORT:-16248}"
PROXY_METRICS_PORT="${SLM_PROXY_METRICS_PORT:-16249}"
PROXY_HEALTHZ_PORT="${SLM_PROXY_HEALTHZ_PORT:-16256}"
REAL_NODE_LABEL="slm.ai/node=real"
REAL_NODE_TAINT="slm.ai/real-node=true:NoSchedule"
NODE_DIR="${STATE}/node"
# containerd's content store and snapshots outlive `down`: imported images stay (cached).
CONTAINERD_ROOT="${SLM_CACHE}/node-containerd"
CONTAINERD_SOCK="/run/slm-containerd/containerd.sock"
CNI_BIN_DIR="${SLM_CNI_BIN_DIR:-/usr/lib/cni}"
NODE_COMPONENTS="containerd kubelet kube-proxy apiserver-proxy"
COMPONENT_PORTS[kubelet]="${KUBELET_PORT}"

# Exit 0 when a real node can run here; otherwise print one line saying why and return 1.
node_supported() {
  [[ "${SLM_REAL_NODE:-auto}" == 0 ]] && { echo "real node: off (SLM_REAL_NODE=0)"; return 1; }
  [[ "$(uname -s)" == Linux ]] || { echo "real node: off (not Linux)"; return 1; }
  [[ ${EUID} -eq 0 ]] || { echo "real node: off (containers need root here; running as uid ${EUID})"; return 1; }
  command -v runc >/dev/null || { echo "real node: off (no runc: apt-get install runc)"; return 1; }
  [[ -x "${CNI_BIN_DIR}/bridge" && -x "${CNI_BIN_DIR}/host-local" && -x "${CNI_BIN_DIR}/loopback" ]] ||
    { echo "real node: off (no CNI plugins in ${CNI_BIN_DIR}: apt-get install containernetworking-plugins)"; return 1; }
  command -v iptables >/dev/null || { echo "real node: off (no iptables for kube-proxy: apt-get install iptables)"; return 1; }
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
    { echo "real node: off (the kernel has no overlay filesystem)"; return 1; }
  if ! ip link show "${NODE_IFACE}" >/dev/null 2>&1; then
    # A dummy interface where the kernel has the module; an empty bridge otherwise (this
    # machine kind: "Error: Unknown device type." for dummy). Either holds a local address.
    ip link add "${NODE_IFACE}" type dummy 2>/dev/null || ip link add "${NODE_IFACE}" type bridge 2>/dev/null ||
      { echo "real node: off (cannot create a network interface for the node address: no CAP_NET_ADMIN?)"; return 1; }
  fi
  if ip -o addr show | grep -v " ${NODE_IFACE} \| ${POD_BRIDGE} " | grep "inet ${POD_CIDR%.*}\.\|inet ${NODE_IP}/" >/dev/null; then
    echo "real node: off (${NODE_IP} or ${POD_CIDR} is already used on this host; set SLM_NODE_IP / SLM_POD_CIDR)"
    return 1
  fi
  local missing
  missing="$(missing_binaries ${SLM_NODE_BINARIES})"
  missing="${missing//kwok-stages/}"
  [[ -z "${missing// /}" ]] || { echo "real node: off (not built: ${missing% }; run e2e/cluster/build)"; return 1; }
  return 0
}

node_pki() {
  [[ -f "${PKI}/.node-done" ]] && return 0
  # The kubelet's client identity (Node authorizer + NodeRestriction), its serving certificate,
  # kube-proxy's identity (bound to system:node-proxier by the bootstrap policy) and the API
  # server's client certificate for kubelet calls (logs, exec, port-forward).
  sign_cert kubelet "/O=system:nodes/CN=system:node:${NODE_NAME}" clientAuth
  sign_cert kubelet-serving "/CN=${NODE_NAME}" serverAuth "IP:${NODE_IP},DNS:${NODE_NAME}"
  sign_cert kube-proxy "/CN=system:kube-proxy" clientAuth
  chmod 600 "${PKI}"/*.key
  write_kubeconfig kubelet
  write_kubeconfig kube-proxy
  touch "${PKI}/.node-done"
}

node_network() {
  ip link set "${NODE_IFACE}" up
  # `replace`, not check-then-add: idempotent (a check that misread a present address made
  # `ip addr add` fail with "Address already assigned" in a loaded CI run).
  ip addr replace "${NODE_IP}/32" dev "${NODE_IFACE}"
  # Service traffic from pods to pods on the same bridge goes through kube-proxy's iptables
  # rules only when bridged frames are seen by iptables.
  modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1 2>/dev/null || true
}

# Write stdin to $1 only when the content differs: kube-proxy exits when its configuration
# file changes ("content of the proxy server's configuration file was updated"), so a re-run
# of `up` must leave unchanged files alone.
write_if_changed() {
  local tmp="$1.tmp.$$"
  cat >"${tmp}"
  if cmp -s "${tmp}" "$1"; then rm -f "${tmp}"; else mv "${tmp}" "$1"; fi
}

node_config() {
  mkdir -p "${NODE_DIR}/cni/net.d" "${NODE_DIR}/containerd" "${NODE_DIR}/kubelet" "$(dirname "${CONTAINERD_SOCK}")"
  # runc, through a wrapper that raises a negative oomScoreAdj (the kernel here refuses to
  # lower it) before exec'ing the real runc.
  write_if_changed "${NODE_DIR}/runc-wrapper" <<EOF
#!/bin/sh
# Generated by e2e/cluster/up. See node.sh for why.
bundle=""
prev=""
for a in "\$@"; do
  [ "\$prev" = "--bundle" ] || [ "\$prev" = "-b" ] && bundle="\$a"
  prev="\$a"
done
if [ -n "\$bundle" ] && [ -f "\$bundle/config.json" ]; then
  python3 - "\$bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
cur = int(open("/proc/self/oom_score_adj").read())
spec = json.load(open(path))
adj = (spec.get("process") or {}).get("oomScoreAdj")
if adj is not None and adj < cur:
    spec["process"]["oomScoreAdj"] = cur
    json.dump(spec, open(path, "w"))
PY
fi
exec "$(command -v runc)" "\$@"
EOF
  chmod 755 "${NODE_DIR}/runc-wrapper"

  write_if_changed "${NODE_DIR}/cni/net.d/10-slm-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "slm-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "${POD_BRIDGE}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "${NODE_DIR}/cni/ipam",
              "ranges": [[{"subnet": "${POD_CIDR}", "gateway": "${POD_GATEWAY}"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  write_if_changed "${NODE_DIR}/containerd/config.toml" <<EOF
version = 3
root = "${CONTAINERD_ROOT}"
state = "/run/slm-containerd/state"

[grpc]
  address = "${CONTAINERD_SOCK}"

[ttrpc]
  address = "${CONTAINERD_SOCK}.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "${PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "${NODE_DIR}/runc-wrapper"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["${CNI_BIN_DIR}"]
    conf_dir = "${NODE_DIR}/cni/net.d"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF

  write_if_changed "${NODE_DIR}/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://${CONTAINERD_SOCK}
address: ${NODE_IP}
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ_PORT}
tlsCertFile: ${PKI}/kubelet-serving.crt
tlsPrivateKeyFile: ${PKI}/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${PKI}/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
failSwapOn: false
oomScoreAdj: 0
serializeImagePulls: false
registerWithTaints:
- {key: ${REAL_NODE_TAINT%%=*}, value: "$(cut -d= -f2 <<<"${REAL_NODE_TAINT}" | cut -d: -f1)", effect: ${REAL_NODE_TAINT##*:}}
# A shared dev machine or CI host: evict only when the disk is really full; never collect the
# images e2e imported (they cannot be pulled back).
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podPidsLimit: 4096
# Secret volume updates (key rotation) reach pods within seconds.
syncFrequency: 10s
maxPods: 60
staticPodPath: ""
EOF

  write_if_changed "${NODE_DIR}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $(kubeconfig_path kube-proxy)}
hostnameOverride: ${NODE_NAME}
mode: iptables
clusterCIDR: ${POD_CIDR}
oomScoreAdj: 0
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:${PROXY_METRICS_PORT}
healthzBindAddress: 127.0.0.1:${PROXY_HEALTHZ_PORT}
nodePortAddresses: ["${NODE_IP}/32"]
EOF
}

# Build (once) and import the sandbox image: an OCI archive of the static pause binary.
node_pause_image() {
  local ctr=(ctr --address "${CONTAINERD_SOCK}" -n k8s.io)
  "${ctr[@]}" images ls -q | grep -x "${PAUSE_IMAGE}" >/dev/null && return 0
  local archive="${NODE_DIR}/pause-$(bin_version pause).oci.tar"
  [[ -f "${archive}" ]] || python3 "${_SLM_LIB_DIR}/oci_archive.py" --binary "$(bin_path pause)" \
    --path /pause --entrypoint /pause --name "${PAUSE_IMAGE}" --out "${archive}"
  "${ctr[@]}" images import --no-unpack=false "${archive}" >/dev/null
}

# Import images into the node's containerd: node_import_images <oci-archive...>
node_import_images() {
  local a
  for a in "$@"; do
    ctr --address "${CONTAINERD_SOCK}" -n k8s.io images import "${a}" >/dev/null
  done
}

node_up() {
  node_pki
  node_network
  node_config
  PATH="${SLM_ACTIVE_BIN}:${PATH}" start containerd containerd --config "${NODE_DIR}/containerd/config.toml" --log-level warn
  wait_for containerd 30 ctr --address "${CONTAINERD_SOCK}" version
  node_pause_image
  start kubelet kubelet --config "${NODE_DIR}/kubelet/config.yaml" \
    --kubeconfig "$(kubeconfig_path kubelet)" --hostname-override "${NODE_NAME}" \
    --node-ip "${NODE_IP}" --node-labels "${REAL_NODE_LABEL},node.kubernetes.io/instance-type=local" \
    --root-dir "${NODE_DIR}/kubelet/root" --cert-dir "${NODE_DIR}/kubelet/pki" --v 1
  start kube-proxy kube-proxy --config "${NODE_DIR}/kube-proxy.yaml" --v 1
  node_api_endpoint
  wait_for "node ${NODE_NAME} Ready" 120 node_ready
}

# Pods on the real node reach the API server as in any cluster: the `kubernetes` Service
# (10.96.0.1:443, DNAT by kube-proxy) -> the node's address, where apiserver-proxy forwards to
# the API server on loopback (TLS end to end; the certificate's SANs hold the Service IP).
# The API server's own endpoint reconciler is off (see up), so this Endpoints object stays.
node_api_endpoint() {
  start apiserver-proxy apiserver-proxy "${NODE_IP}:${APISERVER_PORT}" "127.0.0.1:${APISERVER_PORT}"
  "${KUBECTL[@]}" apply --server-side --force-conflicts --field-manager slm-e2e-up -f - >/dev/null <<EOF
apiVersion: v1
kind: Endpoints
metadata: {name: kubernetes, namespace: default}
subsets:
- addresses: [{ip: ${NODE_IP}}]
  ports: [{name: https, port: ${APISERVER_PORT}, protocol: TCP}]
EOF
}

node_ready() {
  [[ "$("${KUBECTL[@]}" get node "${NODE_NAME}" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
