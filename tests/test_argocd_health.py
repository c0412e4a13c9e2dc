"""The Argo CD health check (docs/argocd/health.lua), run with a real Lua (lupa) on
SLMDeployments captured from the e2e run (tests/data/argocd/<expected-health>-<what>.json,
written by e2e/test_chart.py with SLM_E2E_CAPTURE_ARGOCD=1), plus the cases derived from
them that a live cluster shows only briefly (no status yet, a spec not yet observed).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HEALTH_LUA = ROOT / "docs" / "argocd" / "health.lua"
DATA = ROOT / "tests" / "data" / "argocd"
CAPTURED = sorted(DATA.glob("*.json"))
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def run_health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """Evaluate the check as Argo CD does: `obj` is a global table, the chunk returns `hs`."""
    lupa = pytest.importorskip("lupa", reason="lupa (dev extra) runs the Lua health check")
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(script if script is not None else HEALTH_LUA.read_text())
    return {"status": hs["status"], "message": hs["message"]}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_captured_objects_exist_for_every_health() -> None:
    wanted = {"healthy", "progressing", "degraded", "suspended"}
    have = {p.name.split("-", 1)[0] for p in CAPTURED}
    assert wanted <= have, f"missing captures for {wanted - have} in {DATA} (run e2e/test_chart.py with " \
                           "SLM_E2E_CAPTURE_ARGOCD=1)"


@pytest.mark.parametrize("path", CAPTURED, ids=lambda p: p.stem)
def test_health_of_captured_objects(path: Path) -> None:
    obj = _load(path)
    expected = path.name.split("-", 1)[0].capitalize()
    hs = run_health(obj)
    assert hs["status"] == expected, hs
    assert hs["status"] in ARGO_STATUSES
    assert hs["message"], "Argo CD shows the message: it must say something"
    if expected in ("Degraded", "Healthy"):
        cond = "Degraded" if expected == "Degraded" else "Ready"
        (c,) = [x for x in obj["status"]["conditions"] if x["type"] == cond]
        assert c["message"] in hs["message"] and c["reason"] in hs["message"]


def test_degraded_capture_names_the_missing_secret() -> None:
    (path,) = [p for p in CAPTURED if "secret" in p.name]
    assert "hf-token" in run_health(_load(path))["message"]


def test_no_status_yet_is_progressing() -> None:
    obj = _load(next(p for p in CAPTURED if p.name.startswith("healthy-")))
    obj.pop("status")
    assert run_health(obj)["status"] == "Progressing"
    obj["status"] = {"conditions": []}
    assert run_health(obj)["status"] == "Progressing"


def test_a_spec_change_not_yet_observed_is_progressing_even_if_ready() -> None:
    obj = _load(next(p for p in CAPTURED if p.name.startswith("healthy-")))
    stale = copy.deepcopy(obj)
    stale["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    hs = run_health(stale)
    assert hs["status"] == "Progressing" and "generation" in hs["message"]


def test_argocd_cm_snippet_carries_health_lua_verbatim() -> None:
    cm = yaml.safe_load((ROOT / "docs" / "argocd" / "argocd-cm.yaml").read_text())
    assert cm["data"]["resource.customizations.health.slm.ai_SLMDeployment"] == HEALTH_LUA.read_text()


def test_chart_readme_carries_health_lua_verbatim() -> None:
    readme = (ROOT / "charts" / "slm-operator" / "README.md").read_text()
    assert HEALTH_LUA.read_text() in readme


def test_lua_errors_surface() -> None:
    """A broken script fails here rather than silently in Argo CD."""
    lupa = pytest.importorskip("lupa", reason="lupa (dev extra) runs the Lua health check")
    with pytest.raises(lupa.LuaError):
        run_health({"status": {"conditions": []}}, "return obj.status.conditions[1].type")
