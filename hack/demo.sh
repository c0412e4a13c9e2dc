#!/usr/bin/env bash
# `make demo`: the main job on the embedded default.
#  - no KUBECONFIG: builds (once, cached) and starts the local control plane (e2e/cluster);
#  - KUBECONFIG set: uses that cluster instead.
# Installs the CRD, starts the operator in the background, applies an example
# SLMDeployment and shows it converge; leaves everything running and says how to stop it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
STATE="${SLM_DEMO_DIR:-${HOME}/.cache/slm-operator/demo}"
mkdir -p "${STATE}"
PY="${ROOT}/.venv/bin/python"
EXAMPLE="${SLM_DEMO_EXAMPLE:-examples/qwen3-0.6b-onnx-cpu.yaml}"
NS="${SLM_DEMO_NAMESPACE:-slm-demo}"

if [[ "${1:-}" == "down" ]]; then
  if [[ -f "${STATE}/operator.pid" ]] && kill -0 "$(cat "${STATE}/operator.pid")" 2>/dev/null; then
    kill "$(cat "${STATE}/operator.pid")" && echo "operator stopped"
  fi
  rm -f "${STATE}/operator.pid"
  if [[ -z "${KUBECONFIG:-}" ]]; then e2e/cluster/down; fi
  exit 0
fi

if [[ -z "${KUBECONFIG:-}" ]]; then
  echo "==> No KUBECONFIG: starting the local control plane (first build takes a while, then it is cached)"
  e2e/cluster/build
  KUBECONFIG="$(e2e/cluster/up | tail -n 1)"
  export KUBECONFIG
  LOCAL=1
else
  echo "==> Using the cluster in KUBECONFIG=${KUBECONFIG}"
  LOCAL=0
fi
BIN="${SLM_CACHE:-${HOME}/.cache/slm-operator}/bin/active"
[[ -n "${BIN}" && -d "${BIN}" ]] && export PATH="${BIN}:${PATH}"
command -v kubectl >/dev/null || { echo "kubectl not found: run e2e/cluster/build" >&2; exit 1; }

echo "==> Installing the CRD"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/slmdeployments.slm.ai --timeout=60s >/dev/null

if [[ -f "${STATE}/operator.pid" ]] && kill -0 "$(cat "${STATE}/operator.pid")" 2>/dev/null; then
  echo "==> Operator already running (pid $(cat "${STATE}/operator.pid"))"
else
  echo "==> Starting the operator (log: ${STATE}/operator.log)"
  nohup "${PY}" -m slm_operator.main --all-namespaces --metrics-port 18080 \
    --liveness http://127.0.0.1:18081/healthz >"${STATE}/operator.log" 2>&1 &
  echo $! >"${STATE}/operator.pid"
fi

kubectl create namespace "${NS}" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "==> Applying ${EXAMPLE} in namespace ${NS}"
kubectl -n "${NS}" apply -f "${EXAMPLE}"

echo "==> Watching it converge (Ctrl-C stops watching, not the demo)"
deadline=$((SECONDS + ${SLM_DEMO_TIMEOUT:-180}))
while (( SECONDS < deadline )); do
  clear 2>/dev/null || true
  date +%T
  kubectl -n "${NS}" get slm -o wide
  echo
  kubectl -n "${NS}" get jobs,deployments,pods,svc,hpa,networkpolicies,pvc 2>/dev/null | sed 's/^/  /'
  ready="$(kubectl -n "${NS}" get slm -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}')"
  if [[ -n "${ready}" && "${ready}" != *False* ]]; then break; fi
  sleep 2
done
echo
kubectl -n "${NS}" get slm -o wide
cat <<MSG

The demo keeps running.
  export KUBECONFIG=${KUBECONFIG}
  kubectl -n ${NS} get slm -o wide            # status at a glance
  kubectl -n ${NS} describe slm               # conditions and events
  .venv/bin/slmctl render -f ${EXAMPLE}       # what the operator applies, offline
  tail -f ${STATE}/operator.log               # operator log
Stop it: make demo-down$( ((LOCAL)) && echo " (stops the operator and the local control plane)")
Note: on the local control plane pods are simulated by KWOK (no real model is served).
MSG
