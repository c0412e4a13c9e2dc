"""The render memo (slm_operator.render_memo): a reconcile whose body changed only in status and
resourceVersion reuses the parsed spec, its resolution and its plan; anything render reads
(spec, metadata, the hub endpoint, the consumers' facts) renders again; the plan kept is never
modified by the stages that use it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from test_reconcile_stages import World, _body

from slm_operator import reconciler as reconciler_mod
from slm_operator.hub import HubDefaults
from slm_operator.render import RenderContext, plan
from slm_operator.render_memo import RenderMemo, fingerprint


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"parse": 0, "plan": 0}
    real_parse, real_plan = reconciler_mod.parse, reconciler_mod.plan

    def parse(body: dict[str, Any]) -> Any:
        calls["parse"] += 1
        return real_parse(body)

    def plan_(*a: Any, **k: Any) -> Any:
        calls["plan"] += 1
        return real_plan(*a, **k)

    monkeypatch.setattr(reconciler_mod, "parse", parse)
    monkeypatch.setattr(reconciler_mod, "plan", plan_)
    return calls


def test_fingerprint_ignores_status_and_resource_version_only() -> None:
    a = _body()
    b = {**copy.deepcopy(a), "status": {"observedGeneration": 1}}
    b["metadata"]["resourceVersion"] = "999"
    assert fingerprint(a) == fingerprint(b)
    c = copy.deepcopy(a)
    c["metadata"]["generation"] = 2
    assert fingerprint(c) != fingerprint(a)
    d = copy.deepcopy(a)
    d["metadata"]["labels"] = {"team": "x"}
    assert fingerprint(d) != fingerprint(a)
    e = copy.deepcopy(a)
    e["spec"]["model"]["revision"] = "v2"
    assert fingerprint(e) != fingerprint(a)


def test_a_status_only_change_reuses_the_plan_and_a_spec_change_renders_again(counted: dict[str, int]) -> None:
    w = World()
    w.body["metadata"]["resourceVersion"] = "10"
    w.run()  # creates the children
    w.watch()
    w.body["metadata"]["resourceVersion"] = "11"  # the status write's echo
    w.run()
    assert counted == {"parse": 1, "plan": 1}, "two reconciles of one spec: parsed and rendered once"
    w.body["spec"]["model"]["revision"] = "v2"
    w.body["metadata"]["generation"] = 2
    w.run()
    assert counted == {"parse": 2, "plan": 2}, "a new spec is parsed and rendered again"


def test_a_new_hub_endpoint_resolves_and_renders_again(counted: dict[str, int]) -> None:
    w = World()
    w.run()
    w.rec.ctx = RenderContext(hub=HubDefaults(endpoint="https://hub.mirror.internal"))
    w.run()
    assert counted == {"parse": 2, "plan": 2}
    p = w.rec.memo.plan(fingerprint(w.body), w.rec.ctx)
    assert p is not None and p.job is not None
    env = {e["name"]: e.get("value") for e in p.job["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    assert env.get("HF_ENDPOINT") == "https://hub.mirror.internal", "the plan renders the new endpoint"


def test_the_kept_plan_is_not_modified_by_the_reconciles_that_use_it() -> None:
    w = World()
    for _ in range(3):
        w.run()
        w.watch()
    w.complete_job()
    for _ in range(3):
        w.run()
        w.watch()
    key = fingerprint(w.body)
    kept = w.rec.memo.plan(key, w.rec.ctx)
    assert kept is not None, "the plan of the current spec is kept"
    cr, res = w.rec.memo.resolved(key, w.rec.ctx.hub.endpoint) or (None, None)
    assert cr is not None
    fresh = plan(cr, w.rec.ctx, res)
    assert kept.prepare == fresh.prepare and kept.serve == fresh.serve, "reconciling left the kept objects as rendered"
    assert any(o["kind"] == "Deployment" for o in kept.serve), "the serving stage ran on the kept plan"


def test_the_memo_keeps_at_most_size_entries_least_recently_used_out() -> None:
    memo = RenderMemo(size=2)
    bodies = [_body() for _ in range(3)]
    for i, b in enumerate(bodies):
        b["metadata"]["name"] = f"m{i}"
    keys = [fingerprint(b) for b in bodies]
    ctx = RenderContext()
    sentinel: Any = object()
    memo.keep_plan(keys[0], ctx, sentinel)
    memo.keep_plan(keys[1], ctx, sentinel)
    assert memo.plan(keys[0], ctx) is sentinel  # 0 is now the most recent
    memo.keep_plan(keys[2], ctx, sentinel)
    assert memo.plan(keys[1], ctx) is None, "the least recently used entry went"
    assert memo.plan(keys[0], ctx) is sentinel and memo.plan(keys[2], ctx) is sentinel
    assert len(memo) == 2
    with pytest.raises(ValueError, match="keep at least 1 entry"):
        RenderMemo(size=0)
