from slm_operator.diff import is_subset, needs_apply, parse_quantity


def test_quantities_compare_by_value() -> None:
    assert parse_quantity("1Gi") == parse_quantity("1024Mi")
    assert is_subset({"cpu": "1000m"}, {"cpu": "1"})
    assert not is_subset({"cpu": "2"}, {"cpu": "1"})


def test_server_defaults_do_not_trigger_writes() -> None:
    want = {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 80}], "ingress": []}}
    live = {"metadata": {"name": "a", "labels": {"x": "1"}, "uid": "u", "resourceVersion": "5"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}}
    assert not needs_apply({"apiVersion": "v1", "kind": "Service", **want}, live)


def test_drift_is_detected() -> None:
    want = {"spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "a"}]}}}}
    assert needs_apply(want, {"spec": {"replicas": 3, "template": {"spec": {"containers": [{"image": "a"}]}}}})
    assert needs_apply(want, {"spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "b"}]}}}})
    assert needs_apply(want, {"spec": {"replicas": 2, "template": {"spec": {"containers": []}}}})
    assert needs_apply(want, None)
