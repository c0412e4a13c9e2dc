"""Control-plane efficiency on the real local control plane (bench/controlplane.py's operator run,
at a size that fits make test): CRs failing for ever do not starve the healthy ones, and the
operator's requests per CR stay within the issue-19 bill.

5 SLMDeployments have their Service refused by the API server (a ValidatingAdmissionPolicy,
bench/controlplane.make_failing) and 30 are healthy: every healthy one must reach Ready and
every failing one must show Degraded ApplyRejected quoting the server's refusal, while the work
queue retries the failing ones. Counts, never timings, are asserted (the machine is shared).
About 2-4 minutes on the 2-core CI machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.controlplane as bench

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
HEALTHY, FAILING = 30, 5



def test_failing_crs_do_not_starve_healthy_ones_and_writes_stay_low(kubeconfig: str) -> None:
    bench.ensure_crd(kubeconfig)
    kube = bench.Kube(kubeconfig)
    with kube.sync() as client:
        bench.ensure_gpu_nodes(client, 8)
        bench.ensure_cpu_nodes(client, 4)
    n = HEALTHY + FAILING
    try:
        row = bench.run_operator(kube, kubeconfig, n, quiet=0, workers=16, failing=FAILING, timeout=900)
    finally:
        with kube.sync() as client:
            bench.remove_nodes(client)  # other tests expect GPU pods on the cluster's own gpu-* nodes
    assert row["converged"] == HEALTHY, f"healthy CRs Ready: {row['converged']} of {HEALTHY} ({row})"
    assert row["degraded"] == FAILING, f"failing CRs Degraded ApplyRejected: {row['degraded']} of {FAILING}"
    assert row["refusals"] and all(bench.REFUSAL in m and "refused to apply Service" in m
                                   for m in row["refusals"]), row["refusals"]
    per_cr = row["requests_per_cr"]
    # The exact bill of one CR (children once each, 2 status writes, 1 Event) is asserted without
    # timing in tests/test_writes_per_cr.py. Here the count depends on the machine's load: the
    # failing CRs retry once per REJECTED_RETRY_SECONDS for as long as the run lasts, and a slow
    # pass lets an in-progress status outlive the settle window and be written. Measured: 8.44
    # patches per CR at N=100 on a lighter load, 10.66 in a clean-clone CI run; before
    # issue 19, 14.15. This bound catches a return to the old bill, not load noise.
    assert per_cr.get("patch", 0) <= 12.0, (per_cr, row["wall_s"], row["load_mean"])
    assert per_cr.get("create", 0) <= 2.2, per_cr
    assert per_cr.get("get", 0) <= 0.2, f"no GET of the generated Secret for new CRs: {per_cr}"
