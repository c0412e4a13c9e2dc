"""The chart's observability assets: Grafana dashboard, alert rules, prometheus-adapter rules.

Every PromQL expression is parsed (promql-parser, a real PromQL grammar) and every series it
reads must be one we know is exported: the operator's metrics, the ONNX server's and the
gateway's (taken from their modules; the gateway fronts every engine, Ollama's only series),
vLLM's (checked against the pinned vLLM's source when its venv is there), dcgm-exporter's,
kube-state-metrics' and Prometheus' own `up`.
promtool (hack/build-promtool.sh) checks and unit-tests the alert rules when it is built, and
helm renders the templates when it is; each test says why when it skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

from slm_operator import api
from slm_operator import metrics as operator_metrics
from slm_operator.render import scaling

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "slm-operator"
OBS = CHART / "files" / "observability"
DASHBOARD = OBS / "grafana-dashboard.json"
RULES = OBS / "prometheus-rules.yaml"
RULE_TESTS = OBS / "prometheus-rules.test.yaml"
ADAPTER = OBS / "prometheus-adapter-rules.yaml"
CACHE = Path(os.environ.get("SLM_CACHE", Path.home() / ".cache" / "slm-operator"))
PROMTOOL_VERSION = "v0.316.0"  # keep in step with hack/build-promtool.sh

# vLLM's metric families (prometheus_client names: counters without _total) and their types,
# as vLLM >= 0.12 exports them (vllm/v1/metrics/loggers.py). The first is from
# prometheus-fastapi-instrumentator, which vLLM's API server mounts.
VLLM_FAMILIES = {
    "http_requests": "counter",
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:num_preemptions": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
}
# Older vLLM (<= 0.10; hidden in 0.11, removed in 0.12): read as a fallback only.
VLLM_LEGACY_FAMILIES = {"vllm:gpu_cache_usage_perc": "gauge"}
DCGM_FAMILIES = {"DCGM_FI_DEV_GPU_UTIL": "gauge", "DCGM_FI_DEV_FB_USED": "gauge", "DCGM_FI_DEV_FB_FREE": "gauge"}
KSM_FAMILIES = {name: "gauge" for name in (
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_ready",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_horizontalpodautoscaler_spec_min_replicas",
    "kube_horizontalpodautoscaler_spec_target_metric",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_status_condition",
)}
# llama-server --metrics (llama.cpp tools/server/server-task.cpp, `llamacpp:` prefix): its gauges.
LLAMACPP_FAMILIES = {f"llamacpp:{name}": "gauge" for name in (
    "prompt_tokens_seconds", "predicted_tokens_seconds", "requests_processing", "requests_deferred",
    "n_busy_slots_per_decode")}
PROMETHEUS_FAMILIES = {"up": "gauge"}  # written by Prometheus for every scrape target

GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "${datasource}": "prom",
                "$namespace": "team-a", "$deployment": "qwen3-small"}


# -- known series ---------------------------------------------------------------------------


def _samples(families: dict[str, str]) -> set[str]:
    """The sample names Prometheus stores for metric families of the given types."""
    out: set[str] = set()
    for name, kind in families.items():
        if kind == "counter":
            out |= {f"{name}_total", f"{name}_created"}
        elif kind == "histogram":
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        else:
            out.add(name)
    return out


def _families(registry: CollectorRegistry, prefix: str = "") -> dict[str, str]:
    return {m.name: m.type for m in registry.collect() if m.name.startswith(prefix)}


def operator_series() -> set[str]:
    assert operator_metrics.RECONCILES is not None  # importing the module registers its metrics
    return _samples(_families(REGISTRY, "slm_operator_"))


def onnx_server_series() -> set[str]:
    from slm_onnx_server.metrics import Metrics

    return _samples(_families(Metrics().registry, "slm_onnx_"))


def gateway_series() -> set[str]:
    """The gateway's series (runtime-images/gateway slm_gateway/metrics.py), in every engine pod."""
    from slm_gateway.metrics import GatewayMetrics

    return _samples(_families(GatewayMetrics().registry, "slm_gateway_"))


def known_series() -> set[str]:
    return (operator_series() | onnx_server_series() | gateway_series()
            | _samples(VLLM_FAMILIES)
            | _samples(VLLM_LEGACY_FAMILIES) | _samples(DCGM_FAMILIES) | _samples(KSM_FAMILIES)
            | _samples(LLAMACPP_FAMILIES)
            | _samples(PROMETHEUS_FAMILIES))


# -- PromQL ---------------------------------------------------------------------------------


def _children(node: Any) -> Iterator[Any]:
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and type(child).__module__ == "promql_parser":
            yield child
    yield from getattr(node, "args", None) or []


def selectors(expr: str) -> list[tuple[str, bool]]:
    """(metric name, is_regex) for each vector selector of a PromQL expression."""
    found: list[tuple[str, bool]] = []
    stack = [promql_parser.parse(expr)]
    while stack:
        node = stack.pop()
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                found.append((node.name, False))
            else:
                for m in node.matchers.matchers:
                    if m.name == "__name__":
                        found.append((m.value, m.op == promql_parser.MatchOp.Re))
        stack.extend(_children(node))
    return found


def unknown_series(expr: str, known: set[str]) -> list[str]:
    bad = []
    for name, is_regex in selectors(expr):
        if is_regex:
            if not any(re.fullmatch(name, k) for k in known):
                bad.append(name)
        elif name not in known:
            bad.append(name)
    return bad


def grafana_to_promql(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    assert "$" not in expr.replace("$1", ""), f"unsubstituted Grafana variable in {expr}"
    return expr


def adapter_to_promql(query: str, series: str) -> str:
    """A metricsQuery as prometheus-adapter expands it for pods/<metric> of two pods."""
    return (query.replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="team-a",pod=~"qwen3-small-7d9f-abcde|qwen3-small-7d9f-fghij"')
            .replace("<<.GroupBy>>", "pod"))


# -- the assets -----------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    out = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    """("panel title/refId", PromQL) for every panel target and every query variable's selector."""
    exprs = [(f"{p['title']}/{t['refId']}", grafana_to_promql(t["expr"]))
             for p in dashboard_panels() for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.*), *\w+\)", var["definition"])
            assert m, f"variable {var['name']}: expected label_values(selector, label)"
            exprs.append((f"variable {var['name']}", grafana_to_promql(m.group(1))))
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(ADAPTER.read_text())["rules"]


def adapter_api_name(rule: dict[str, Any], series: str) -> str | None:
    """prometheus-adapter's naming: `matches` regex, `as` with $1/${1} (default $1 or $0)."""
    m = re.search(rule["name"]["matches"], series)
    if not m:
        return None
    template = rule["name"].get("as") or ("$1" if m.re.groups == 1 else "$0")
    return re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))), template)


# -- dashboard ------------------------------------------------------------------------------


def test_dashboard_is_valid_grafana_json():
    d = dashboard()
    assert d["uid"] and len(d["uid"]) <= 40
    assert d["schemaVersion"] >= 36
    names = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "namespace", "deployment"} <= names
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dashboard_panels():
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], f"panel {p['title']} has no query"
        assert p["datasource"]["uid"] == "${datasource}"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
    # Panels never overlap: each (x, y) cell belongs to one panel.
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard_panels():
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_dashboard_covers_what_issue_7_asks_for():
    titles = " | ".join(p["title"].lower() for p in dashboard_panels())
    for word in ("requests/s", "error rate", "tokens/s", "time to first token", "end-to-end", "queue depth",
                 "kv-cache", "gpu utilization", "gpu memory", "replicas", "quantization jobs",
                 "quantization job duration", "reconciles/s", "reconcile duration", "by consumer",
                 "tokens/s by consumer", "throttled (429)", "auth failures (401)"):
        assert word in titles, f"no panel about {word}"


def test_dashboard_per_deployment_panels_select_namespace_and_deployment():
    operator_row = False
    for p in dashboard()["panels"]:
        if p["type"] == "row":
            operator_row = "operator" in p["title"].lower()
            continue
        if operator_row:
            continue  # operator metrics are operator-wide: no per-SLMDeployment label
        for t in p["targets"]:
            assert '$namespace"' in t["expr"], f"{p['title']}: {t['expr']}"
            assert '$deployment"' in t["expr"], f"{p['title']}: {t['expr']}"


def test_dashboard_queries_parse_and_read_only_exported_series():
    known = known_series()
    problems = []
    for title, expr in dashboard_exprs():
        try:
            bad = unknown_series(expr, known)
        except Exception as err:  # promql_parser raises its own error type
            problems.append(f"{title}: does not parse ({err}): {expr}")
            continue
        if bad:
            problems.append(f"{title}: unknown series {bad}")
    assert not problems, "\n".join(problems)


def test_unknown_series_is_caught():
    """The name check itself: a typo in a metric name must be reported."""
    known = known_series()
    assert unknown_series('sum(rate(vllm:prompt_tokens_total{pod="a"}[5m]))', known) == []
    assert unknown_series("sum(vllm:num_request_waiting)", known) == ["vllm:num_request_waiting"]
    assert unknown_series('{__name__=~"vllm:nope_.*"}', known) == ["vllm:nope_.*"]


# -- alert rules ----------------------------------------------------------------------------


def test_alerts_cover_issue_7_and_are_documented():
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {"SLMDeploymentNotReady", "SLMQuantizationFailed", "SLMQueueDepthHighAtMaxReplicas",
            "SLMHighErrorRate", "SLMOperatorReconcileErrors", "SLMConsumerThrottled", "SLMAuthFailuresSpike"} <= names
    docs = (ROOT / "docs" / "observability.md").read_text()
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
        for key in ("summary", "description", "runbook"):
            assert r["annotations"].get(key), f"{r['alert']} lacks {key}"
        assert f"`{r['alert']}`" in docs, f"{r['alert']} missing from docs/observability.md"


def test_alert_expressions_parse_and_read_only_exported_series():
    known = known_series()
    for r in alert_rules():
        assert unknown_series(r["expr"], known) == [], r["alert"]


def test_not_ready_alert_reads_the_per_object_condition_gauge():
    """The alert needs the per-object gauge the operator exports, with these labels."""
    labels = set(operator_metrics.CONDITION._labelnames)
    assert {"namespace", "name", "condition", "status"} <= labels
    expr = next(r["expr"] for r in alert_rules() if r["alert"] == "SLMDeploymentNotReady")
    assert operator_metrics.CONDITION._name in expr


# -- prometheus-adapter rules ---------------------------------------------------------------


def _adapter_series(rule: dict[str, Any], known: set[str]) -> set[str]:
    """The series names a rule's seriesQuery discovers among the known ones."""
    out = set()
    for name, is_regex in selectors(rule["seriesQuery"]):
        out |= {k for k in known if re.fullmatch(name, k)} if is_regex else {name}
    return out


def test_adapter_rules_expose_exactly_the_metrics_the_hpas_ask_for():
    known = known_series()
    exposed: dict[str, set[str]] = {}
    for rule in adapter_rules():
        series = _adapter_series(rule, known)
        assert series and series <= known, f"{rule['seriesQuery']} discovers no known series"
        for s in series:
            api_name = adapter_api_name(rule, s)
            assert api_name, f"{s} does not match {rule['name']['matches']}"
            exposed.setdefault(api_name, set()).add(s)
    wanted = {scaling.GPU_UTIL_METRIC, scaling.KV_CACHE_METRIC, *scaling.QUEUE_METRIC.values()}
    assert set(exposed) == wanted
    assert exposed[scaling.GPU_UTIL_METRIC] == {"DCGM_FI_DEV_GPU_UTIL"}
    assert exposed[scaling.QUEUE_METRIC["vllm"]] == {"vllm:num_requests_waiting"}
    assert exposed[scaling.QUEUE_METRIC["onnxruntime"]] == {"slm_onnx_queue_depth"}
    assert exposed[scaling.KV_CACHE_METRIC] == {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}


def test_every_rendered_hpa_pods_metric_is_served_by_an_adapter_rule():
    """Render each HPA signal for each engine and look its name up in the adapter rules."""
    known = known_series()
    served = {adapter_api_name(r, s) for r in adapter_rules() for s in _adapter_series(r, known)}
    cases = [(api.ScalingMetric(type=api.MetricType.GPU_UTILIZATION, target_percent=80), "vllm"),
             (api.ScalingMetric(type=api.MetricType.KV_CACHE_USAGE, target_percent=70), "vllm"),
             (api.ScalingMetric(type=api.MetricType.QUEUE_DEPTH, target_average_value=4), "vllm"),
             (api.ScalingMetric(type=api.MetricType.QUEUE_DEPTH, target_average_value=4), "onnxruntime"),
             (api.ScalingMetric(type=api.MetricType.GPU_UTILIZATION, target_percent=80), "onnxruntime")]
    for metric, engine in cases:
        rendered = scaling.hpa_metric(metric, engine)
        assert rendered["type"] == "Pods"
        assert rendered["pods"]["metric"]["name"] in served, (metric, engine)


def test_adapter_rules_attribute_to_pods_and_query_per_pod():
    known = known_series()
    for rule in adapter_rules():
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                                  "pod": {"resource": "pod"}}
        q = rule["metricsQuery"]
        assert "<<.LabelMatchers>>" in q and "<<.GroupBy>>" in q
        for series in _adapter_series(rule, known):
            expr = adapter_to_promql(q, series)
            tree = promql_parser.parse(expr)
            # One value per pod: the top node aggregates by exactly the GroupBy labels.
            assert isinstance(tree, promql_parser.AggregateExpr), expr
            assert list(tree.modifier.labels) == ["pod"], expr
            assert unknown_series(expr, known) == [], expr


# -- promtool -------------------------------------------------------------------------------


def find_promtool() -> str | None:
    for candidate in (os.environ.get("PROMTOOL"), str(CACHE / "bin" / f"promtool-{PROMTOOL_VERSION}"),
                      shutil.which("promtool")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = find_promtool()
    if tool is None:
        pytest.skip(f"promtool not found (PROMTOOL, {CACHE}/bin/promtool-{PROMTOOL_VERSION} or PATH): "
                    "build it with hack/build-promtool.sh (a Go build, a few minutes once)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=300, check=False)


def test_promtool_checks_the_alert_rules():
    out = run_promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout + out.stderr


def test_promtool_parses_dashboard_and_adapter_queries(tmp_path):
    """promtool's parser (Prometheus' own) on every dashboard and adapter query, as recording rules."""
    rules = [{"record": f"check:dashboard_{i}", "expr": e} for i, (_, e) in enumerate(dashboard_exprs())]
    known = known_series()
    for i, rule in enumerate(adapter_rules()):
        for s in sorted(_adapter_series(rule, known)):
            rules.append({"record": f"check:adapter_{i}", "expr": adapter_to_promql(rule["metricsQuery"], s)})
        rules.append({"record": f"check:adapter_series_{i}", "expr": rule["seriesQuery"]})
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    out = run_promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def alert_tests() -> dict[str, Any]:
    return yaml.safe_load(RULE_TESTS.read_text())


def test_every_alert_has_a_promtool_unit_test():
    tests = alert_tests()
    assert tests["rule_files"] == [RULES.name]
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]}
    assert tested == {r["alert"] for r in alert_rules()}


def test_promtool_unit_tests_the_alerts():
    out = run_promtool("test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


def test_promtool_unit_tests_fail_when_an_alert_is_wrong(tmp_path):
    """The harness catches a wrong expectation (so a passing run means something)."""
    tests = alert_tests()
    tests["rule_files"] = [str(RULES)]
    first = tests["tests"][0]["alert_rule_test"][0]   # NotReady at 10m: no alert expected
    assert first == {"eval_time": "10m", "alertname": "SLMDeploymentNotReady", "exp_alerts": []}
    first["exp_alerts"] = [{"exp_labels": {"severity": "warning", "namespace": "team-a", "name": "broken"}}]
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = run_promtool("test", "rules", str(path))
    assert out.returncode != 0, out.stdout
    assert "SLMDeploymentNotReady" in out.stdout + out.stderr


# -- dashboard queries on synthetic series ---------------------------------------------------
# What Prometheus holds for one SLMDeployment "qwen3-small" in "team-a" per engine, labelled
# the way the operator's ServiceMonitor (namespace/service/pod), dcgm-exporter with
# honorLabels, kube-state-metrics and the operator's ServiceMonitor (honorLabels) label it.

POD = {"namespace": "team-a", "service": "qwen3-small", "pod": "qwen3-small-7d9f8c6b5-abcde"}
OTHER_POD = {"namespace": "team-a", "service": "other", "pod": "other-6c5b4a3f2-fghij"}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def _histogram(name: str, labels: dict[str, str]) -> list[dict[str, str]]:
    return [_series(f"{name}_bucket", {**labels, "le": le}, f"0+{n}x60")
            for le, n in (("0.1", 1), ("1", 3), ("+Inf", 4))]


def synthetic_series(engine: str) -> list[dict[str, str]]:
    ksm = {"namespace": "team-a", "job": "kube-state-metrics"}
    op = {"namespace": "slm-system", "job": "slm-operator"}
    out = [
        _series("slm_operator_slmdeployment_condition",
                {"namespace": "team-a", "name": "qwen3-small", "condition": "Ready", "status": "True"}, "1x60"),
        _series("slm_operator_slmdeployments", {**op, "condition": "Ready", "status": "True"}, "1x60"),
        _series("slm_operator_quantization_jobs_total", {**op, "format": "onnx", "outcome": "succeeded"}, "0+1x60"),
        *_histogram("slm_operator_quantization_job_duration_seconds", {**op, "format": "onnx", "outcome": "succeeded"}),
        _series("slm_operator_reconciles_total", {**op, "result": "success"}, "0+5x60"),
        *_histogram("slm_operator_reconcile_duration_seconds", {**op, "result": "success"}),
        _series("slm_operator_workqueue_depth", op, "0x60"),
        _series("slm_operator_api_writes_total", {**op, "kind": "Deployment"}, "0+1x60"),
        _series("slm_operator_sizing_refusals_total", {**op, "engine": "vllm"}, "0+1x60"),
        _series("kube_deployment_spec_replicas", {**ksm, "deployment": "qwen3-small"}, "2x60"),
        _series("kube_deployment_status_replicas_ready", {**ksm, "deployment": "qwen3-small"}, "2x60"),
        *[_series(f"kube_horizontalpodautoscaler_{m}", {**ksm, "horizontalpodautoscaler": "qwen3-small"}, v)
          for m, v in (("status_desired_replicas", "2x60"), ("spec_min_replicas", "1x60"),
                       ("spec_max_replicas", "4x60"))],
        _series("kube_horizontalpodautoscaler_spec_target_metric",
                {**ksm, "horizontalpodautoscaler": "qwen3-small", "metric_name": "queue",
                 "metric_target_type": "average"}, "4x60"),
        _series("up", {**POD, "job": "qwen3-small"}, "1x60"),
        _series("up", {**OTHER_POD, "job": "other"}, "1x60"),
        # The gateway in front of every engine (runtime-images/gateway slm_gateway/metrics.py).
        _series("slm_gateway_requests_total", {**POD, "consumer": "web", "route": "/v1/chat/completions",
                                               "code": "200"}, "0+10x60"),
        _series("slm_gateway_tokens_total", {**POD, "consumer": "web", "kind": "completion"}, "0+30x60"),
        _series("slm_gateway_rate_limited_total", {**POD, "consumer": "web", "limit": "requests"}, "0+1x60"),
        _series("slm_gateway_auth_failures_total", {**POD, "reason": "invalid"}, "0+2x60"),
        _series("slm_gateway_limit_store_errors_total", {**POD, "outcome": "refused"}, "0+1x60"),
        _series("slm_gateway_in_flight_requests", POD, "1x60"),
        *_histogram("slm_gateway_upstream_latency_seconds", {**POD, "route": "/v1/chat/completions"}),
        *_histogram("slm_gateway_request_duration_seconds", {**POD, "route": "/v1/chat/completions"}),
    ]
    if engine == "vllm":
        eng = {**POD, "model_name": "qwen3", "engine": "0"}
        gpu = {"namespace": "team-a", "pod": POD["pod"], "gpu": "0", "job": "dcgm-exporter"}
        out += [
            _series("http_requests_total", {**POD, "handler": "/v1/chat/completions", "method": "POST",
                                            "status": "2xx"}, "0+10x60"),
            *[_series(f"vllm:{m}", eng, "2x60") for m in ("num_requests_running", "num_requests_waiting")],
            _series("vllm:kv_cache_usage_perc", eng, "0.5x60"),
            *[_series(f"vllm:{m}_total", eng, "0+7x60")
              for m in ("prompt_tokens", "generation_tokens", "num_preemptions")],
            *[s for m in ("time_to_first_token_seconds", "inter_token_latency_seconds",
                          "e2e_request_latency_seconds") for s in _histogram(f"vllm:{m}", eng)],
            _series("DCGM_FI_DEV_GPU_UTIL", gpu, "95x60"),
            _series("DCGM_FI_DEV_FB_USED", gpu, "20000x60"),
            _series("DCGM_FI_DEV_FB_FREE", gpu, "4000x60"),
            _series("DCGM_FI_DEV_GPU_UTIL", {**gpu, "pod": OTHER_POD["pod"]}, "5x60"),
        ]
    elif engine == "onnxruntime":
        out += [
            _series("slm_onnx_requests_total", {**POD, "route": "/v1/chat/completions", "status": "200"}, "0+10x60"),
            _series("slm_onnx_queue_depth", POD, "3x60"),
            _series("slm_onnx_running_requests", POD, "4x60"),
            *[_series(f"slm_onnx_{m}_total", POD, "0+7x60") for m in ("prompt_tokens", "generation_tokens")],
            *[s for m in ("time_to_first_token_seconds", "time_per_output_token_seconds",
                          "e2e_request_latency_seconds") for s in _histogram(f"slm_onnx_{m}", POD)],
        ]
    # ollama: the gateway's series above are all it has.
    return out


# Queries that have nothing to show for an engine (no such metric, or no GPU).
GPU_QUERIES = {"GPU utilization/A", "GPU memory used/A", "GPU memory used/B"}
EMPTY_FOR = {
    "vllm": set(),
    "onnxruntime": {"KV-cache usage/A", "KV-cache usage/B"} | GPU_QUERIES,
    "ollama": {"KV-cache usage/A", "KV-cache usage/B", "Tokens/s/A", "Tokens/s/B", "Time per output token/A",
               "Time per output token/B", "Requests waiting (queue depth)/A", "HPA metric vs target/B",
               "Time to first token p95/A"} | GPU_QUERIES,
}


def test_every_dashboard_query_returns_data_for_each_engine(tmp_path):
    """Each query, on synthetic series of each engine, returns data (or is known to have none).

    promtool evaluates `count(<query>) > 0` as an alert: it fires exactly when the query
    returns something, which checks the joins, label selections and `or` fallbacks, not only
    the syntax.
    """
    exprs = dashboard_exprs()
    titles = {title for title, _ in exprs}
    for engine, empty in EMPTY_FOR.items():
        assert empty <= titles, f"{engine}: {empty - titles} are not dashboard queries"
    rules = [{"alert": f"Q{i}", "expr": f"count({expr}) > 0"} for i, (_, expr) in enumerate(exprs)]
    rules_path = tmp_path / "dashboard-rules.yaml"
    rules_path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    known = known_series()
    cases = []
    for engine, empty in EMPTY_FOR.items():
        series = synthetic_series(engine)
        for s in series:  # the synthetic data itself only uses exported names
            assert s["series"].split("{")[0] in known, s["series"]
        cases.append({"interval": "1m", "input_series": series, "alert_rule_test": [
            {"eval_time": "30m", "alertname": f"Q{i}", "exp_alerts": [] if title in empty else [{"exp_labels": {}}]}
            for i, (title, _) in enumerate(exprs)]})
    tests_path = tmp_path / "dashboard-test.yaml"
    tests_path.write_text(yaml.safe_dump({"rule_files": [str(rules_path)], "evaluation_interval": "1m",
                                          "tests": cases}, sort_keys=False))
    out = run_promtool("test", "rules", str(tests_path))
    if out.returncode != 0:  # name the panels, not Q<n>
        report = out.stdout + out.stderr
        for i, (title, _) in reversed(list(enumerate(exprs))):
            report = report.replace(f'alertname: Q{i},', f"alertname: Q{i} ({title}),")
        pytest.fail(report)


def test_adapter_queries_give_each_pods_value(tmp_path):
    """The adapter's expanded metricsQuery on synthetic series: one sample per pod, the right value.

    Pod a has two GPUs (80 %, 100 %) and two vLLM engines (2 and 3 waiting); pod b one of each.
    A pod the HPA did not ask about (c) must not appear.
    """
    a, b = "qwen3-small-7d9f8c6b5-aaaaa", "qwen3-small-7d9f8c6b5-bbbbb"
    ns = {"namespace": "team-a"}
    series = [
        _series("DCGM_FI_DEV_GPU_UTIL", {**ns, "pod": a, "gpu": "0"}, "80x10"),
        _series("DCGM_FI_DEV_GPU_UTIL", {**ns, "pod": a, "gpu": "1"}, "100x10"),
        _series("DCGM_FI_DEV_GPU_UTIL", {**ns, "pod": b, "gpu": "0"}, "30x10"),
        _series("DCGM_FI_DEV_GPU_UTIL", {**ns, "pod": "c", "gpu": "0"}, "99x10"),
        _series("vllm:num_requests_waiting", {**ns, "pod": a, "engine": "0"}, "2x10"),
        _series("vllm:num_requests_waiting", {**ns, "pod": a, "engine": "1"}, "3x10"),
        _series("vllm:num_requests_waiting", {**ns, "pod": b, "engine": "0"}, "7x10"),
        _series("vllm:kv_cache_usage_perc", {**ns, "pod": a, "engine": "0"}, "0.5x10"),
        _series("vllm:kv_cache_usage_perc", {**ns, "pod": a, "engine": "1"}, "0.7x10"),
        _series("vllm:gpu_cache_usage_perc", {**ns, "pod": b, "engine": "0"}, "0.9x10"),  # an older vLLM
        _series("slm_onnx_queue_depth", {**ns, "pod": a}, "4x10"),
        _series("slm_onnx_queue_depth", {**ns, "pod": b}, "0x10"),
        _series("llamacpp:requests_deferred", {**ns, "pod": a}, "3x10"),
        _series("llamacpp:requests_deferred", {**ns, "pod": b}, "1x10"),
    ]
    want = {
        scaling.GPU_UTIL_METRIC: {a: 90, b: 30},
        scaling.QUEUE_METRIC["vllm"]: {a: 5, b: 7},
        scaling.KV_CACHE_METRIC: {a: 0.6, b: 0.9},
        scaling.QUEUE_METRIC["onnxruntime"]: {a: 4, b: 0},
        scaling.QUEUE_METRIC["llamacpp"]: {a: 3, b: 1},
    }
    known = known_series()
    expr_tests = []
    for rule in adapter_rules():
        discovered = sorted(_adapter_series(rule, known))
        api_name = adapter_api_name(rule, discovered[0])
        # prometheus-adapter substitutes one discovered series name for <<.Series>>.
        query = (rule["metricsQuery"].replace("<<.Series>>", discovered[0])
                 .replace("<<.LabelMatchers>>", f'namespace="team-a",pod=~"{a}|{b}"')
                 .replace("<<.GroupBy>>", "pod"))
        expr_tests.append({"expr": query, "eval_time": "5m", "exp_samples": [
            {"labels": f'{{pod="{pod}"}}', "value": value} for pod, value in want[api_name].items()]})
    assert len(expr_tests) == len(want)
    empty_rules = tmp_path / "none.yaml"
    empty_rules.write_text("groups: []\n")
    path = tmp_path / "adapter-test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [str(empty_rules)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": series, "promql_expr_test": expr_tests}]}, sort_keys=False))
    out = run_promtool("test", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


# -- vLLM's own source ----------------------------------------------------------------------


def test_vllm_metric_names_match_the_pinned_vllm():
    from slm_vllm import VLLM_VERSION

    site = next((CACHE / f"venv-vllm-{VLLM_VERSION}").glob("lib/python3*/site-packages"), None)
    loggers = site / "vllm" / "v1" / "metrics" / "loggers.py" if site else None
    if loggers is None or not loggers.exists():
        pytest.skip(f"vLLM {VLLM_VERSION} venv not found under {CACHE}: build it with tests/engines/vllm_env.sh")
    source = loggers.read_text()
    found = {name: kind for kind, name in
             re.findall(r'_(gauge|counter|histogram)_cls\(\s*name="(vllm:[a-z0-9_]+)"', source)}
    for name, kind in VLLM_FAMILIES.items():
        if name.startswith("vllm:"):
            assert found.get(name) == kind, f"{name}: vLLM {VLLM_VERSION} has {found.get(name)}"
    assert "vllm:gpu_cache_usage_perc" not in found  # legacy name: kept only as a fallback
    instrumentator = (site / "vllm" / "entrypoints" / "serve" / "instrumentator" / "metrics.py").read_text()
    assert "Instrumentator(" in instrumentator  # serves http_requests_total{handler,method,status}


# -- helm -----------------------------------------------------------------------------------


def helm() -> str:
    for candidate in (os.environ.get("HELM"), str(CACHE / "bin" / "active" / "helm"), shutil.which("helm")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip(f"helm not found (HELM, {CACHE}/bin/active/helm or PATH): e2e/cluster builds it")


def helm_template(*sets: str) -> list[dict[str, Any]]:
    args = [helm(), "template", "obs", str(CHART), "--namespace", "slm-system", "--kube-version", "1.37.0"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _observability_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "observability"]


def test_helm_renders_nothing_for_observability_by_default():
    assert _observability_objects(helm_template()) == []


def test_helm_renders_the_observability_assets(tmp_path):
    docs = helm_template("observability.grafanaDashboard.enabled=true",
                         "observability.prometheusRule.enabled=true",
                         "observability.prometheusAdapterRules.enabled=true",
                         "observability.prometheusRule.labels.release=kube-prometheus-stack")
    objs = _observability_objects(docs)
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in objs}
    assert len(objs) == 3, sorted(by_kind)

    dash = next(d for d in objs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dash["metadata"]["namespace"] == "slm-system"
    (content,) = dash["data"].values()
    assert json.loads(content) == dashboard()

    rule = next(d for d in objs if d["kind"] == "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())

    adapter = next(d for d in objs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-adapter-rules"))
    assert yaml.safe_load(adapter["data"]["config.yaml"]) == yaml.safe_load(ADAPTER.read_text())

    # The rendered PrometheusRule's groups are what promtool checks (when it is built).
    if find_promtool():
        rendered = tmp_path / "rendered-rules.yaml"
        rendered.write_text(yaml.safe_dump(rule["spec"]))
        out = run_promtool("check", "rules", str(rendered))
        assert out.returncode == 0, out.stdout + out.stderr
    else:
        print("promtool not built: the rendered PrometheusRule was compared with the rules file only")


def test_helm_dashboard_label_and_namespace_can_be_set():
    docs = helm_template("observability.grafanaDashboard.enabled=true",
                         "observability.grafanaDashboard.namespace=monitoring",
                         "observability.grafanaDashboard.labels.grafana_dashboard=slm",
                         "observability.grafanaDashboard.annotations.grafana_folder=LLM")
    (dash,) = _observability_objects(docs)
    assert dash["metadata"]["namespace"] == "monitoring"
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "slm"  # the user's value, given once
    assert dash["metadata"]["annotations"] == {"grafana_folder": "LLM"}


def _job(uid: str, failed_at: str) -> dict[str, Any]:
    return {"metadata": {"uid": uid}, "status": {"startTime": "2026-01-01T00:00:00Z", "failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "lastTransitionTime": failed_at}]}}


def test_a_restart_does_not_count_jobs_that_finished_before_it():
    """SLMQuantizationFailed reads increase() of the Job counter: an operator restart (or an HA
    failover) that counted every failed Job still present again would fire it for old failures."""
    from slm_operator.reconciler import Reconciler
    from slm_operator.render import RenderContext

    def failed() -> float:
        return REGISTRY.get_sample_value("slm_operator_quantization_jobs_total",
                                         {"format": "gguf", "outcome": "failed"}) or 0.0

    rec = Reconciler(None, None, RenderContext())  # type: ignore[arg-type]
    before = failed()
    rec._record_job_metrics(_job("old", "2000-01-01T00:00:00Z"), "gguf", "failed")
    assert failed() == before, "a Job that failed before this process started was counted"
    rec._record_job_metrics(_job("new", "2999-01-01T00:00:00Z"), "gguf", "failed")
    rec._record_job_metrics(_job("new", "2999-01-01T00:00:00Z"), "gguf", "failed")
    assert failed() == before + 1, "a Job that failed while this process ran is counted once"
