"""HA failover (issue 18 item 2): two replicas in one kopf peering, as the chart runs them
(replicaCount=2: a StatefulSet, `--peering=<release>`, SLM_PRIORITY = the pod index; rendered
with `helm template`, run here as two processes). The active replica (index 1) is SIGKILLed at
random moments while SLMDeployments converge: the standby (index 0) must resume within the
peering lifetime (kopf presumes the killed peer dead 60 s after its last keep-alive), then the
killed replica is restarted (as the StatefulSet would) and takes over again, pausing the other.

The paused standby must do no work (the "double work" left open before; fixed in
slm_operator.peering): after each hand-back the test edits CRs and deletes serving pods, which
without the fix made the paused replica reconcile from the bodies it held (its own pod watch kept
running) and write the old spec's status over the new one. Checked three ways: the paused
replica's log shows no write to an SLMDeployment or a child after it paused (a reconcile in
flight at that moment may finish: 5 s grace), the status watch sees no observedGeneration going
back, and every invariant of e2e.chaos.invariants holds at the end.

`make test`: 2 kills (about 4 minutes: each failover waits out the peering lifetime);
`make chaos`: SLM_HA_KILLS=10.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import re
import statistics
import time
from pathlib import Path

import pytest

from e2e.chaos import (
    PEERING_LIFETIME_S,
    ROOT,
    StatusWatch,
    apply_fleet,
    chart_ha_operator,
    edit_wave,
    ensure_crd,
    fleet,
    invariants,
    kill,
    operator,
    paused,
    wait_converged,
)
from e2e.helpers import OperatorProcess, apply, kubectl, wait_for

pytestmark = pytest.mark.e2e

N_CRS = int(os.environ.get("SLM_HA_CRS", "30"))
KILLS = int(os.environ.get("SLM_HA_KILLS", "2"))
SEED = int(os.environ.get("SLM_HA_SEED", "18"))
# Slack on top of the peering lifetime for a loaded machine: the standby's re-check after the
# dead peer's deadline is one PATCH and one watch event.
FAILOVER_SLACK_S = 30
# A write by the paused replica counts when it is logged this long after "Pausing operations".
PAUSE_GRACE_S = 5.0
WRITE = re.compile(r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]?.*HTTP Request: (PATCH|POST|PUT|DELETE) "
                   r"\S+/namespaces/[^/]+/(?!kopfpeerings)(\S+)")


def _stamp(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f")


def writes_while_paused(op: OperatorProcess) -> list[str]:
    """Writes (not to the peering object, not Events) the replica logged more than PAUSE_GRACE_S
    after its last "Pausing operations" line, while still paused."""
    out = op.output()
    at = out.rfind("Pausing operations")
    if at < 0 or not paused(op):
        return []
    head = out[:at].rsplit("\n", 1)[-1]
    m = re.match(r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", head)
    if not m:
        return []
    since = _stamp(m.group(1))
    bad = []
    for line in out[at:].splitlines():
        w = WRITE.match(line)
        if w and not w.group(3).startswith("events") and (_stamp(w.group(1)) - since).total_seconds() > PAUSE_GRACE_S:
            bad.append(line[:300])
    return bad


def test_active_replica_killed_standby_takes_over_and_a_paused_one_does_nothing(
        kubeconfig: str, namespace: str, tmp_path: Path) -> None:
    kc, ns = kubeconfig, namespace
    ensure_crd(kc)
    kubectl(kc, "apply", "--server-side", "--force-conflicts", "-f",
            str(ROOT / "charts/slm-operator/crds/kopf-peerings.yaml"))
    args, env, peerings = chart_ha_operator(ns)
    apply(kc, *peerings)
    rng = random.Random(SEED)
    crs = fleet(N_CRS, prefix="ha")
    names = [cr["metadata"]["name"] for cr in crs]
    failover_s: list[float] = []
    idle_writes: list[str] = []

    def replica(index: int, incarnation: int) -> contextlib.AbstractContextManager[OperatorProcess]:
        return operator(kc, [], extra_args=args, env={**env, "SLM_PRIORITY": str(index)},
                            log_path=tmp_path / f"replica{index}-{incarnation}.log")

    with StatusWatch(kc, ns) as watch, replica(0, 0) as standby:
        active_cm = replica(1, 0)
        active = active_cm.__enter__()
        try:
            wait_for(lambda: paused(standby) and "Resuming operations" in active.output() and not paused(active),
                     timeout=120, interval=0.5, what="replica 1 active, replica 0 standing by")
            apply_fleet(kc, ns, crs)
            for k in range(KILLS):
                time.sleep(rng.uniform(1.0, 10.0))
                assert kill(active), f"replica 1 exited before kill {k}:\n{active.output()[-3000:]}"
                killed = time.monotonic()
                active_cm.__exit__(None, None, None)  # the dead process: nothing to stop, no traceback
                wait_for(lambda: not paused(standby), timeout=PEERING_LIFETIME_S + FAILOVER_SLACK_S, interval=0.2,
                         what=f"the standby to resume after kill {k} (peering lifetime {PEERING_LIFETIME_S}s)")
                failover_s.append(time.monotonic() - killed)
                # While replica 0 works alone: more edits.
                edit_wave(crs, rng)
                apply_fleet(kc, ns, crs)
                # The StatefulSet restarts replica 1: it takes over, replica 0 pauses.
                active_cm = replica(1, k + 1)
                active = active_cm.__enter__()
                wait_for(lambda a=active: paused(standby) and not paused(a), timeout=120, interval=0.5,
                         what="restarted replica 1 active again, replica 0 paused")
                # Work the paused replica must not touch: edits (new generations) and pod churn
                # (its pod watch still runs) for CRs whose bodies it holds.
                changed = edit_wave(crs, rng)
                apply_fleet(kc, ns, crs)
                victims = changed[:10]
                if victims:
                    kubectl(kc, "-n", ns, "delete", "pods", "-l",
                            f"slm.ai/deployment in ({','.join(victims)}),app.kubernetes.io/component=server",
                            "--wait=false")
                wait_converged(kc, ns, names, timeout=600)
                idle_writes += writes_while_paused(standby)
            converge = wait_converged(kc, ns, names, timeout=600)
            problems = invariants(kc, ns, names)
            assert paused(standby), "replica 0 resumed while replica 1 was alive"
            idle_writes += writes_while_paused(standby)
        finally:
            active_cm.__exit__(None, None, None)
    print(f"\nHA failover: {len(failover_s)}/{KILLS} kills taken over; failover p50 "
          f"{statistics.median(failover_s):.1f}s, max {max(failover_s):.1f}s "
          f"({', '.join(f'{x:.1f}' for x in failover_s)}; peering lifetime "
          f"{PEERING_LIFETIME_S}s); converged {converge:.1f}s after the last hand-back; "
          f"{watch.events} statuses watched")
    assert not idle_writes, "the paused replica wrote:\n" + "\n".join(idle_writes[:20])
    assert not watch.violations, "older statuses written over newer ones:\n" + "\n".join(watch.violations[:20])
    assert not problems, "\n".join(problems[:20])
