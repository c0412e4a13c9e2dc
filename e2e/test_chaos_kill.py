"""Kill points (issue 18 item 1): SIGKILL the operator at random moments while 50 SLMDeployments
converge, restart it each time; afterwards every invariant of e2e.chaos.invariants holds.

One seed = one wave of work (seed 0 creates the fleet; each later seed edits about half of it:
replicas or the quantization type, i.e. a new artifact key and Job) and SLM_CHAOS_KILLS kills at
moments drawn from random.Random(seed) over each incarnation's first seconds (start-up, the
first list, mid-reconcile), then one clean run that must converge. A kill counts as survived
when the seed's wave then converges with every invariant holding. A background watch of the
CRs' statuses fails the test if any status ever shows an older observedGeneration than one
written before it.

`make test` runs SLM_CHAOS_SEEDS=1 (3 kills, about 2-3 minutes on 2 cores; kept within the CI budget); `make chaos`
runs 20 seeds (60 kills).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from pathlib import Path

import pytest

from e2e.chaos import (
    StatusWatch,
    apply_fleet,
    converged,
    edit_wave,
    ensure_crd,
    fleet,
    invariants,
    kill,
    operator,
    wait_converged,
)

pytestmark = pytest.mark.e2e

N_CRS = int(os.environ.get("SLM_CHAOS_CRS", "50"))
SEEDS = int(os.environ.get("SLM_CHAOS_SEEDS", "1"))
FIRST_SEED = int(os.environ.get("SLM_CHAOS_FIRST_SEED", "0"))  # to run a range of seeds (0: the first)
KILLS_PER_SEED = int(os.environ.get("SLM_CHAOS_KILLS", "3"))
# Kill moments: a share in start-up (0.5-5 s after the process starts: on a busy machine that
# is still imports or the prefill lists), the rest KILL_WINDOW seconds after "slm-operator
# started" (the first reconciles of 50 CRs: applies, Jobs, status writes).
START_UP_SHARE = 0.2
KILL_WINDOW = (0.0, 8.0)


def test_sigkill_at_random_moments_then_everything_converges(kubeconfig: str, namespace: str,
                                                             tmp_path: Path) -> None:
    kc, ns = kubeconfig, namespace
    ensure_crd(kc)
    crs = fleet(N_CRS)
    names = [cr["metadata"]["name"] for cr in crs]
    tried = survived = busy_kills = 0
    converge_s: list[float] = []
    failures: list[str] = []
    with StatusWatch(kc, ns) as watch:
        for seed in range(FIRST_SEED, FIRST_SEED + SEEDS):
            rng = random.Random(seed)
            if seed != FIRST_SEED:  # the first seed of a run creates the fleet
                changed = edit_wave(crs, rng)
                assert changed, f"seed {seed}: the edit wave changed nothing"
            apply_fleet(kc, ns, crs)
            kills = 0
            for k in range(KILLS_PER_SEED):
                log = tmp_path / f"operator-seed{seed}-kill{k}.log"
                with operator(kc, [ns], log_path=log) as op:
                    if rng.random() < START_UP_SHARE:  # somewhere in start-up: imports, the prefill lists
                        time.sleep(rng.uniform(0.5, 5.0))
                    else:  # once it reconciles: the first lists, applies, status writes
                        op.wait_for_output("slm-operator started", timeout=180)
                        time.sleep(rng.uniform(*KILL_WINDOW))
                    busy_kills += not converged(kc, ns, names)
                    assert kill(op), f"seed {seed}: the operator exited before kill {k}:\n{op.output()[-3000:]}"
                    kills += 1
            tried += kills
            with operator(kc, [ns], log_path=tmp_path / f"operator-seed{seed}-final.log") as op:
                op.wait_for_output("slm-operator started", timeout=120)
                converge_s.append(wait_converged(kc, ns, names, timeout=600))
                problems = invariants(kc, ns, names)
                assert op.process.poll() is None, "the operator exited on its own"
            if problems:
                failures.append(f"seed {seed}: " + "; ".join(problems[:10]))
            else:
                survived += kills
    print(f"\nkill points: {survived}/{tried} kills survived ({busy_kills} while the fleet had not converged); "
          f"{watch.events} statuses watched; converge after the last restart: "
          f"p50 {statistics.median(converge_s):.1f}s, max {max(converge_s):.1f}s")
    assert not watch.violations, "older statuses written over newer ones:\n" + "\n".join(watch.violations[:20])
    assert not failures, "\n".join(failures)
    assert watch.events >= N_CRS, "the status watch saw almost nothing: it cannot have checked generations"
    assert busy_kills, "no kill landed while there was work to do: the kill window is too late"
