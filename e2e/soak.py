"""Soak (issue 18 item 8): random SLMDeployment churn for SOAK_MINUTES, invariants every minute, RSS sampled.

Run with `make soak` (not in `make test`): `python -m e2e.soak` on the shared local control
plane (KWOK nodes; started or reused by e2e/cluster/up, or the cluster KUBECONFIG names).

- An operator (`e2e.chaos.operator`, i.e. `python -m slm_operator.main`) watches a fresh
  namespace `soak-<hex>`.
- Churn: up to SOAK_OPS_PER_S operations per second (default 1; each is a kubectl call, so a
  loaded machine makes fewer: the JSON line reports the rate reached), each one of: create a CR with a new,
  never reused name (so state kept per name would show as growth), update one (replicas 1 <-> 2,
  or the quantization type int4 <-> fp16: a new artifact key, a new Job), or delete one. Between
  SOAK_MIN_CRS and SOAK_MAX_CRS (5 and 20) CRs live at a time. Seeded by SOAK_SEED.
- Every SOAK_CHECK_S seconds (60) churn pauses, every live CR must converge (Ready at its
  generation, e2e.chaos.wait_converged, within 300 s) and e2e.chaos.invariants must hold (one Job
  per artifact key, one of each child, no orphans, including of deleted CRs once the garbage
  collector has had 60 s); e2e.chaos.StatusWatch must have seen no status older than one before.
- The operator's RSS (VmRSS from /proc) is sampled every 10 s. After SOAK_WARMUP_MINUTES (10)
  the least-squares slope of RSS over time is printed in KB/min; the soak fails if it exceeds
  SOAK_MAX_SLOPE_KB_PER_MIN (100 KB/min: 6 MB an hour; the issue's goal is no growth, the
  tolerance absorbs the allocator's noise over a short window). Runs shorter than twice the
  warm-up measure the slope over their second half instead and say so.

Exit status 0 when everything held, 1 otherwise (the failures are printed). A JSON line with
the figures is the last line of the output.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from e2e.chaos import StatusWatch, ensure_crd, fleet, invariants, operator, wait_converged
from e2e.helpers import CLUSTER_BIN_DIR, CLUSTER_DIR, kubectl, wait_for

SAMPLE_S = 10.0  # RSS sampling interval (seconds)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number: set it to e.g. {default}") from None


def rss_kb(pid: int) -> int:
    """The resident set size of `pid` in KB (VmRSS of /proc/<pid>/status); 0 once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def slope_kb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KB) samples, in KB per minute (0.0 with fewer than 2 samples)."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mt) * (r - mr) for t, r in samples) / var


class Churn:
    """The seeded create/update/delete stream against one namespace; `live` maps name -> desired CR."""

    def __init__(self, kubeconfig: str, namespace: str, rng: random.Random, lo: int, hi: int) -> None:
        self.kc, self.ns, self.rng, self.lo, self.hi = kubeconfig, namespace, rng, lo, hi
        (base,) = fleet(1, prefix="soak")
        base["spec"]["storage"] = {"retainPolicy": "Delete"}  # a deleted CR leaves nothing behind
        self.base = base
        self.live: dict[str, dict[str, Any]] = {}
        self.counter = 0
        self.ops = {"create": 0, "update": 0, "delete": 0}
        self.errors: list[str] = []

    def step(self) -> None:
        """One operation: create below `lo` CRs, delete above `hi`, else a random one of the three."""
        n = len(self.live)
        op = "create" if n < self.lo else "delete" if n >= self.hi else self.rng.choice(
            ("create", "update", "update", "delete"))
        try:
            if op == "create":
                cr = copy.deepcopy(self.base)
                cr["metadata"] = {"name": f"soak-{self.counter:05d}"}
                self.counter += 1
                kubectl(self.kc, "-n", self.ns, "apply", "-f", "-", input=json.dumps(cr))
                self.live[cr["metadata"]["name"]] = cr
            elif op == "update":
                name = self.rng.choice(sorted(self.live))
                spec = self.live[name]["spec"]
                if self.rng.random() < 0.5:
                    spec["replicas"] = 3 - int(spec.get("replicas", 1))
                else:
                    q = spec["quantization"]
                    q["type"] = "fp16" if q.get("type") == "int4" else "int4"
                kubectl(self.kc, "-n", self.ns, "apply", "-f", "-", input=json.dumps(self.live[name]))
            else:
                name = self.rng.choice(sorted(self.live))
                kubectl(self.kc, "-n", self.ns, "delete", "slmdeployment", name, "--wait=false")
                del self.live[name]
            self.ops[op] += 1
        except Exception as e:  # a refused kubectl call is a failure of the soak, not of the script
            self.errors.append(f"{op}: {e}"[:500])


def check(kubeconfig: str, namespace: str, names: list[str]) -> tuple[float, list[str]]:
    """Wait for convergence and then for every invariant (the garbage collector removes the
    children of deleted CRs in its own time: up to 60 s more). Returns (seconds, problems)."""
    started = time.monotonic()
    try:
        wait_converged(kubeconfig, namespace, names, timeout=300)
    except TimeoutError as e:
        return time.monotonic() - started, [str(e)[:3000]]
    problems: list[str] = []

    def holds() -> bool:
        nonlocal problems
        problems = invariants(kubeconfig, namespace, names)
        return not problems

    with contextlib.suppress(TimeoutError):
        wait_for(holds, timeout=60, interval=2, what="the invariants")
    return time.monotonic() - started, problems


def main() -> int:
    """Run the soak; return the exit status (see the module docstring)."""
    minutes = _env_float("SOAK_MINUTES", 60)
    warmup = _env_float("SOAK_WARMUP_MINUTES", 10) * 60
    max_slope = _env_float("SOAK_MAX_SLOPE_KB_PER_MIN", 100)
    rate = _env_float("SOAK_OPS_PER_S", 1)
    check_s = _env_float("SOAK_CHECK_S", 60)
    lo, hi = int(_env_float("SOAK_MIN_CRS", 5)), int(_env_float("SOAK_MAX_CRS", 20))
    seed = int(_env_float("SOAK_SEED", 1))
    if rate <= 0 or minutes <= 0 or not 0 < lo <= hi:
        raise SystemExit("SOAK_OPS_PER_S and SOAK_MINUTES must be positive and 0 < SOAK_MIN_CRS <= SOAK_MAX_CRS")
    os.environ["PATH"] = f"{CLUSTER_BIN_DIR}{os.pathsep}{os.environ['PATH']}"
    kc = os.environ.get("SLM_E2E_KUBECONFIG") or subprocess.run(
        [str(CLUSTER_DIR / "up")], capture_output=True, text=True, check=True,
        timeout=1800).stdout.strip().splitlines()[-1]
    ensure_crd(kc)
    ns = f"soak-{uuid.uuid4().hex[:6]}"
    kubectl(kc, "create", "namespace", ns)
    logdir = Path(tempfile.mkdtemp(prefix="slm-soak-"))
    churn = Churn(kc, ns, random.Random(seed), lo, hi)
    samples: list[tuple[float, int]] = []
    failures: list[str] = []
    checks: list[float] = []
    stop = threading.Event()
    t0 = time.monotonic()
    print(f"soak: {minutes:g} min in namespace {ns}, {rate:g} op/s, {lo}-{hi} CRs, seed {seed}; "
          f"operator log {logdir / 'operator.log'}", flush=True)
    try:
        with StatusWatch(kc, ns) as watch, operator(kc, [ns], log_path=logdir / "operator.log") as op:
            op.wait_for_output("slm-operator started", timeout=180)
            pid = op.process.pid

            def sample() -> None:
                while not stop.is_set():
                    kb = rss_kb(pid)
                    if kb:
                        samples.append((time.monotonic() - t0, kb))
                    stop.wait(SAMPLE_S)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            end = t0 + minutes * 60
            next_check = time.monotonic() + check_s
            while time.monotonic() < end:
                tick = time.monotonic()
                churn.step()
                if op.process.poll() is not None:
                    failures.append(f"the operator exited ({op.process.returncode})")
                    break
                if time.monotonic() >= next_check:
                    took, problems = check(kc, ns, sorted(churn.live))
                    checks.append(took)
                    elapsed = (time.monotonic() - t0) / 60
                    rss = samples[-1][1] if samples else 0
                    print(f"[{elapsed:5.1f} min] {len(churn.live)} CRs, ops {churn.ops}, converged+invariants in "
                          f"{took:.0f}s, RSS {rss / 1024:.1f} MB, {len(problems)} problems", flush=True)
                    failures += [f"at {elapsed:.1f} min: {p}" for p in problems[:10]]
                    next_check = time.monotonic() + check_s
                time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - tick)))
            took, problems = check(kc, ns, sorted(churn.live))
            failures += [f"at the end: {p}" for p in problems[:10]]
            stop.set()
            sampler.join(30)
            failures += watch.violations[:10]
    except AssertionError as e:  # e2e.chaos.operator: tracebacks in the operator's output
        failures.append(str(e)[:3000])
    finally:
        stop.set()
        subprocess.run(["kubectl", "--kubeconfig", kc, "delete", "namespace", ns, "--wait=false"],
                       capture_output=True, check=False, timeout=120)
    failures += [f"kubectl refused: {e}" for e in churn.errors[:10]]

    total = time.monotonic() - t0
    window_start = warmup if total >= 2 * warmup else total / 2
    window = [s for s in samples if s[0] >= window_start]
    slope = slope_kb_per_min(window)
    note = "" if total >= 2 * warmup else \
        f" (run shorter than 2x the warm-up: slope over the last {total / 120:.1f} min)"
    peak = max((r for _, r in samples), default=0)
    first, last = (samples[0][1], samples[-1][1]) if samples else (0, 0)
    print(f"soak: {total / 60:.1f} min, ops {churn.ops}, {len(checks)} checks (longest {max(checks, default=0):.0f}s); "
          f"RSS {first / 1024:.1f} -> {last / 1024:.1f} MB, max {peak / 1024:.1f} MB; "
          f"slope after {window_start / 60:.1f} min: {slope:+.1f} KB/min over {len(window)} samples{note}; "
          f"tolerance {max_slope:g} KB/min", flush=True)
    if len(window) >= 2 and slope > max_slope:
        failures.append(f"RSS grows {slope:.1f} KB/min after the warm-up (tolerance {max_slope:g} KB/min): "
                        f"samples (s, KB) {window[::max(1, len(window) // 20)]}")
    if sum(churn.ops.values()) == 0:
        failures.append("no operation was made")
    for f in failures:
        print(f"FAIL: {f}", flush=True)
    print(json.dumps({"minutes": round(total / 60, 2), "ops": churn.ops, "checks": len(checks),
                      "ops_per_s_outside_checks": round(sum(churn.ops.values()) / max(total - sum(checks), 1), 2),
                      "rss_first_kb": first, "rss_last_kb": last, "slope_kb_per_min": round(slope, 1),
                      "slope_window_start_min": round(window_start / 60, 2), "samples": len(samples),
                      "failures": len(failures), "operator_log": str(logdir / "operator.log")}))
    if not failures:
        shutil.rmtree(logdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
