from slm_operator.status import Cond, Observation, build_status, status_changed, transitions


def _conds(status: dict) -> dict:
    return {c["type"]: c for c in status["conditions"]}


def test_ready_when_model_and_serving_ready() -> None:
    o = Observation(generation=3, endpoint="http://x.ns.svc:8000/v1", replicas_desired=2, replicas_ready=2)
    o.model = Cond(True, "ArtifactReady", "ok.")
    o.available = Cond(True, "MinimumReplicasAvailable", "2/2 replicas ready.")
    s = build_status(o, None)
    c = _conds(s)
    assert c["Ready"]["status"] == "True" and c["Degraded"]["status"] == "False"
    assert c["Progressing"]["status"] == "False"
    assert all(x["observedGeneration"] == 3 for x in s["conditions"])
    assert s["replicas"]["summary"] == "2/2"


def test_degraded_explains_and_blocks_ready() -> None:
    o = Observation(generation=1)
    o.problem = Cond(True, "SecretNotFound", "Secret hf-token was not found.")
    s = build_status(o, None)
    c = _conds(s)
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "SecretNotFound"
    assert c["Degraded"]["message"] == "Secret hf-token was not found."


def test_unchanged_observation_means_no_write_and_stable_times() -> None:
    o = Observation(generation=1)
    first = build_status(o, None)
    second = build_status(o, first)
    assert not status_changed(second, first)
    assert [x["lastTransitionTime"] for x in first["conditions"]] == \
        [x["lastTransitionTime"] for x in second["conditions"]]
    o.model = Cond(True, "ArtifactReady", "ok.")
    third = build_status(o, second)
    assert status_changed(third, second)
    assert ("ModelReady", "True", "ArtifactReady", "ok.") in transitions(third, second)


def test_one_event_per_change() -> None:
    from slm_operator.reconciler import _transition_event

    o = Observation(generation=1)
    first = build_status(o, None)
    assert _transition_event(transitions(first, None), first=True) is None, "a new CR's first status is no news"
    o.problem = Cond(True, "SecretNotFound", "missing.")
    bad = build_status(o, first)
    assert _transition_event(transitions(bad, first), first=False) == ("Warning", "SecretNotFound", "missing.")
    o.problem = None
    o.model = Cond(True, "ArtifactReady", "ok.")
    o.available = Cond(True, "MinimumReplicasAvailable", "ok.")
    good = build_status(o, bad)
    assert _transition_event(transitions(good, bad), first=False)[:2] == ("Normal", "Ready")


def test_quantizer_summary_maps_into_artifact_status() -> None:
    import json

    from slm_operator.observe import artifact_facts as _artifact_facts
    from slm_operator.observe import termination_summary as _termination_summary
    from slm_operator.podfaults import summarise

    msg = {"result": "Succeeded", "message": "ok", "totalBytes": 1234, "perplexityBefore": 56.123456,
           "perplexityAfter": 56.5, "increasePct": 0.67}
    pod = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"containerStatuses": [
        {"state": {"terminated": {"message": json.dumps(msg)}}}]}}
    summary = _termination_summary([summarise(pod)])
    assert _artifact_facts(summary) == {"sizeBytes": 1234, "perplexityBefore": "56.1235", "perplexityAfter": "56.5",
                                        "perplexityIncreasePercent": "0.67"}
    assert _termination_summary([summarise({"metadata": {}, "status": {}})]) == {}
