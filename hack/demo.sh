#!/usr/bin/env bash
# `make demo`: the main job, for real where it can be.
#  - no KUBECONFIG: builds (once, cached) and starts the local control plane (e2e/cluster) with
#    its real node, builds the images (Debian base, cached) and loads them into the node,
#    serves a tiny Qwen3-architecture model from a local hub, applies an SLMDeployment, waits
#    for the quantization Job and the ONNX Runtime server, and ends with a chat completion
#    answered through the endpoint plus the exact curl to repeat it.
#    Where containers cannot run, the real node is off (one line says why) and KWOK simulates
#    the pods: the demo then shows the objects converge, and says that nothing answers.
#  - KUBECONFIG set: uses that cluster. Images reach it the way it expects: kind (kind load),
#    k3d (k3d image import), minikube (minikube image load), or REGISTRY=host[:port] (make
#    images-push; the operator then points at it). Otherwise it prints what to run and stops
#    before anything would sit in ImagePullBackOff.
# Leaves everything running; `make demo-down` stops it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
CACHE="${SLM_CACHE:-${HOME}/.cache/slm-operator}"
STATE="${SLM_DEMO_DIR:-${CACHE}/demo}"
CLUSTER_STATE="${SLM_CLUSTER_DIR:-${CACHE}/cluster}"
mkdir -p "${STATE}"
PY="${ROOT}/.venv/bin/python"
NS="${SLM_DEMO_NAMESPACE:-slm-demo}"
NAME="tiny-qwen3"
HUB_PORT="${SLM_DEMO_HUB_PORT:-18090}"
LOCAL_PORT="${SLM_DEMO_PORT:-18000}"
BIN="${CACHE}/bin/active"
export PATH="${BIN}:${PATH}"

stop_pid() {  # stop_pid <name>: the background process recorded in ${STATE}/<name>.pid
  local f="${STATE}/$1.pid"
  if [[ -f "${f}" ]] && kill -0 "$(cat "${f}")" 2>/dev/null; then
    kill "$(cat "${f}")" && echo "$1 stopped"
  fi
  rm -f "${f}"
}

# The local cluster's own kubeconfig (what the demo tells users to export) means local too.
[[ "${KUBECONFIG:-}" == "${CLUSTER_STATE}/kubeconfig" ]] && unset KUBECONFIG

if [[ "${1:-}" == "down" ]]; then
  stop_pid port-forward
  stop_pid hub
  stop_pid operator
  if [[ -z "${KUBECONFIG:-}" ]]; then e2e/cluster/down; fi
  exit 0
fi

if [[ -z "${KUBECONFIG:-}" ]]; then
  echo "==> No KUBECONFIG: starting the local control plane (first build takes a while, then it is cached)"
  e2e/cluster/build
  KUBECONFIG="$(e2e/cluster/up | tail -n 1)"
  export KUBECONFIG
  LOCAL=1
  NODE_STATUS="$(cat "${CLUSTER_STATE}/node-status" 2>/dev/null || echo "real node: off (unknown)")"
  echo "==> ${NODE_STATUS}"
  [[ "${NODE_STATUS}" == "real node: on"* ]] && REAL=1 || REAL=0
else
  echo "==> Using the cluster in KUBECONFIG=${KUBECONFIG}"
  LOCAL=0
  REAL=1
fi
command -v kubectl >/dev/null || { echo "kubectl not found: run e2e/cluster/build" >&2; exit 1; }
KUBECTL="$(command -v kubectl)"

# --- images ---------------------------------------------------------------------------------
OPERATOR_ENV=()
if ((LOCAL && REAL)); then
  echo "==> Building the images on a Debian base and loading them into the real node (cached)"
  "${PY}" -c "from e2e.realnode import ensure_images; ensure_images(['quantizer', 'onnxruntime-server'])"
elif ((!LOCAL)); then
  ctx="$(kubectl config current-context)"
  images=(quantizer onnxruntime-server)
  if [[ -n "${REGISTRY:-}" ]]; then
    echo "==> Building and pushing the images to ${REGISTRY}"
    make images-push REGISTRY="${REGISTRY}" SLM_IMAGES="${images[*]}"
    for n in quantizer onnxruntime; do
      ref="$(hack/images.sh ref "${n/onnxruntime/onnxruntime-server}")"
      OPERATOR_ENV+=("SLM_IMAGE_${n^^}=${REGISTRY}/${ref#*/}")
    done
  elif [[ "${ctx}" == kind-* ]] && command -v kind >/dev/null; then
    echo "==> kind cluster ${ctx#kind-}: building the images and loading them with kind load"
    hack/images.sh build "${images[@]}"
    for n in "${images[@]}"; do
      hack/images.sh save "${n}" "${STATE}/${n}.tar"
      kind load image-archive --name "${ctx#kind-}" "${STATE}/${n}.tar"
      rm -f "${STATE}/${n}.tar"
    done
  elif [[ "${ctx}" == k3d-* ]] && command -v k3d >/dev/null; then
    echo "==> k3d cluster ${ctx#k3d-}: building the images and importing them with k3d image import"
    hack/images.sh build "${images[@]}"
    for n in "${images[@]}"; do k3d image import --cluster "${ctx#k3d-}" "$(hack/images.sh ref "${n}")"; done
  elif [[ "${ctx}" == minikube ]] && command -v minikube >/dev/null; then
    echo "==> minikube: building the images and loading them with minikube image load"
    hack/images.sh build "${images[@]}"
    for n in "${images[@]}"; do minikube image load "$(hack/images.sh ref "${n}")"; done
  else
    cat >&2 <<MSG
The cluster in context '${ctx}' cannot get the images from here: they are not published, so its
pods would sit in ImagePullBackOff. Push them to a registry that cluster pulls from and re-run:
  make demo REGISTRY=registry.example.internal:5000
(kind, k3d and minikube clusters are loaded directly when their CLI is on PATH.)
MSG
    exit 1
  fi
fi

echo "==> Installing the CRD"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/slmdeployments.slm.ai --timeout=60s >/dev/null

# --- the model: a local hub with a tiny model (local real node), else the public hub -------
if ((LOCAL && REAL)); then
  NODE_IP="$(kubectl get node "${SLM_NODE_NAME:-slm-node-0}" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')"
  if [[ -f "${STATE}/hub.pid" ]] && kill -0 "$(cat "${STATE}/hub.pid")" 2>/dev/null; then
    echo "==> Local hub already running (pid $(cat "${STATE}/hub.pid"))"
  else
    echo "==> Building a tiny Qwen3-architecture model (first time: a minute or two; cached)"
    MODEL_DIR="$("${PY}" -c "from slm_runtime.tiny_models import tiny_model; print(tiny_model('qwen3'))")"
    echo "==> Serving it from a local hub at http://${NODE_IP}:${HUB_PORT} (log: ${STATE}/hub.log)"
    nohup "${PY}" -m e2e.hubserver --repo "slm-demo/${NAME}=${MODEL_DIR}" --host "${NODE_IP}" \
      --port "${HUB_PORT}" >"${STATE}/hub.log" 2>&1 &
    echo $! >"${STATE}/hub.pid"
    for _ in $(seq 100); do grep -q '"url"' "${STATE}/hub.log" && break; sleep 0.2; done
  fi
  REVISION="$("${PY}" -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['repos'][sys.argv[2]]['main'])" \
    "${STATE}/hub.log" "slm-demo/${NAME}")"
  EXAMPLE="${STATE}/${NAME}.yaml"
  cat >"${EXAMPLE}" <<EOF
# Generated by make demo: a tiny model from the local hub, on the local real node.
apiVersion: slm.ai/v1alpha1
kind: SLMDeployment
metadata:
  name: ${NAME}
spec:
  model:
    source: hf://slm-demo/${NAME}
    revision: ${REVISION}
    hub:
      endpoint: http://${NODE_IP}:${HUB_PORT}
    contextLength: 512
  quantization:
    format: onnx
    type: int4
  engine:
    name: onnxruntime
  replicas: 1
  resources:
    cpu: 500m
    memory: 2Gi
  storage:
    size: 1Gi
  nodeSelector:
    slm.ai/node: real
  tolerations:
  - key: slm.ai/real-node
    operator: Exists
    effect: NoSchedule
EOF
  SERVED="${NAME}"
else
  EXAMPLE="${SLM_DEMO_EXAMPLE:-examples/qwen3-0.6b-onnx-cpu.yaml}"
  NAME="$(sed -n 's/^  name: //p' "${EXAMPLE}" | head -1)"
  SERVED="qwen3-0.6b"
fi

if [[ -f "${STATE}/operator.pid" ]] && kill -0 "$(cat "${STATE}/operator.pid")" 2>/dev/null; then
  echo "==> Operator already running (pid $(cat "${STATE}/operator.pid"))"
else
  echo "==> Starting the operator (log: ${STATE}/operator.log)"
  env "${OPERATOR_ENV[@]}" nohup "${PY}" -m slm_operator.main --all-namespaces --metrics-port 18080 \
    --liveness http://127.0.0.1:18081/healthz >"${STATE}/operator.log" 2>&1 &
  echo $! >"${STATE}/operator.pid"
fi

kubectl create namespace "${NS}" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace "${NS}" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
echo "==> Applying ${EXAMPLE} in namespace ${NS} (Pod Security: restricted)"
kubectl -n "${NS}" apply -f "${EXAMPLE}"

echo "==> Watching it converge (Ctrl-C stops watching, not the demo)"
start=${SECONDS}
deadline=$((SECONDS + ${SLM_DEMO_TIMEOUT:-900}))
ready=""
while ((SECONDS < deadline)); do
  [[ -t 1 ]] && { clear 2>/dev/null || true; }
  echo "--- $(date +%T) (+$((SECONDS - start))s)"
  kubectl -n "${NS}" get slm -o wide
  kubectl -n "${NS}" get jobs,deployments,pods 2>/dev/null | sed 's/^/  /'
  ready="$(kubectl -n "${NS}" get slm "${NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
  degraded="$(kubectl -n "${NS}" get slm "${NAME}" -o jsonpath='{.status.conditions[?(@.type=="Degraded")].message}')"
  if [[ "${ready}" == True ]]; then break; fi
  if [[ -n "${degraded}" && "${degraded}" != "No problems found." ]]; then echo "Degraded: ${degraded}"; fi
  sleep 5
done
echo
kubectl -n "${NS}" get slm -o wide
if [[ "${ready}" != True ]]; then
  echo "Not Ready after ${SLM_DEMO_TIMEOUT:-900}s: kubectl -n ${NS} describe slm ${NAME}; operator log ${STATE}/operator.log" >&2
  exit 1
fi

if ((LOCAL && !REAL)); then
  cat <<MSG

Pods on this cluster are simulated by KWOK (${NODE_STATUS#real node: }): the objects converged,
but nothing answers at the endpoint. On a machine where containers run, make demo serves a
real model.
  export PATH=${BIN}:\$PATH KUBECONFIG=${KUBECONFIG}
  kubectl -n ${NS} get slm -o wide
Stop it: make demo-down
MSG
  exit 0
fi

# --- the answer -------------------------------------------------------------------------------
stop_pid port-forward
nohup "${KUBECTL}" -n "${NS}" port-forward --address 127.0.0.1 "service/${NAME}" "${LOCAL_PORT}:8000" \
  >"${STATE}/port-forward.log" 2>&1 &
echo $! >"${STATE}/port-forward.pid"
for _ in $(seq 50); do grep -q Forwarding "${STATE}/port-forward.log" && break; sleep 0.2; done
KEY_CMD="${KUBECTL} -n ${NS} get secret ${NAME}-api-key -o jsonpath='{.data.api-key}' | base64 -d"
BODY="{\"model\": \"${SERVED}\", \"messages\": [{\"role\": \"user\", \"content\": \"Say hello.\"}], \"max_tokens\": 16}"
KEY="$(eval "${KEY_CMD}")"
echo "==> A chat completion through the endpoint (kubectl port-forward to 127.0.0.1:${LOCAL_PORT}):"
answer=""
for _ in $(seq 30); do
  if answer="$(curl -sf "http://127.0.0.1:${LOCAL_PORT}/v1/chat/completions" -H "Authorization: Bearer ${KEY}" \
      -H 'Content-Type: application/json' -d "${BODY}")"; then break; fi
  sleep 2
done
[[ -n "${answer}" ]] || { echo "no answer from the endpoint; see ${STATE}/port-forward.log" >&2; exit 1; }
echo "${answer}" | "${PY}" -m json.tool
cat <<MSG

Serving after $((SECONDS - start))s. Repeat it yourself:
  export KUBECONFIG=${KUBECONFIG}
  KEY=\$(${KEY_CMD})
  curl -s http://127.0.0.1:${LOCAL_PORT}/v1/chat/completions -H "Authorization: Bearer \$KEY" \\
    -H 'Content-Type: application/json' -d '${BODY}'
Without the key it answers 401. More:
  ${KUBECTL} -n ${NS} get slm -o wide            # status at a glance
  ${KUBECTL} -n ${NS} describe slm ${NAME}       # conditions and events
  .venv/bin/slmctl render -f ${EXAMPLE}          # what the operator applies, offline
  tail -f ${STATE}/operator.log                  # operator log
Stop it: make demo-down$( ((LOCAL)) && echo " (stops the port-forward, the hub, the operator and the local control plane)")
MSG
