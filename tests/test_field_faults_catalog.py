"""Issue 12, field faults that only the catalog can see (admission cannot), and item 13's rest.

- Item 6: a model the hub gates needs model.tokenSecretRef: `slmctl validate` says so offline,
  the operator says so as Degraded (HubTokenRequired) with a Warning Event.
- Item 10: families that overflow in float16 (Gemma2/3) are refused on GPUs without bfloat16
  and in fp16, naming the GPU and the fix; Gemma3 is not sent to the ONNX builder the
  quantizer refuses.
- Item 11: GPU label variants (MIG slices, -SHARED, aliases) map to the right memory and the
  node's own label value; unknown ones are refused naming the label and the fix.
- Item 13: after a refused write, the rest of the object is still reconciled and status carries
  the new observedGeneration.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from test_faults import NS, _serving, world  # noqa: F401  (the reconciler world fixture)

from slm_operator import api
from slm_operator.resolve import gated_refusal, resolve
from slm_operator.sizing import (
    MigSliceError,
    UnknownGpuError,
    UnsupportedDtypeError,
    autoconfigure,
    list_gpus,
    list_models,
    lookup_gpu,
    lookup_model,
)
from slm_operator.sizing.autoconfig import FP16_UNSAFE_FAMILIES
from slm_operator.sizing.catalog import GIB
from slm_operator.validate import defaulted, validate

SHA = "0123456789abcdef0123456789abcdef01234567"


def body(spec: dict[str, Any], name: str = "m") -> dict[str, Any]:
    return {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": name, "namespace": "ns", "uid": "uid-1"}, "spec": copy.deepcopy(spec)}


def cr(spec: dict[str, Any]) -> api.SLMDeployment:
    return api.SLMDeployment.model_validate(defaulted(body(spec)))


def gguf(source: str, **model: Any) -> dict[str, Any]:
    return {"model": {"source": source, "revision": SHA, **model}, "engine": {"name": "ollama"},
            "quantization": {"format": "gguf", "type": "Q4_K_M"}}


def vllm(source: str, product: str, count: int = 1, **quant: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"source": source, "revision": SHA}, "engine": {"name": "vllm"},
                            "resources": {"gpu": {"count": count, "product": product}}}
    if quant:
        spec["quantization"] = quant
    return spec


# -- item 6: gated models --------------------------------------------------------------------

GATED = sorted({m.id for m in list_models() if m.gated} | {a for m in list_models() if m.gated for a in m.aliases})
OPEN = sorted(m.id for m in list_models() if not m.gated)


def test_the_issue_input_is_refused_offline_naming_the_field() -> None:
    errs = validate(body(gguf("hf://meta-llama/Llama-3.2-3B-Instruct")))
    assert len(errs) == 1
    assert errs[0].startswith("spec.model.tokenSecretRef: meta-llama/Llama-3.2-3B-Instruct is gated")
    assert "model.tokenSecretRef.name" in errs[0] and "kubectl create secret" in errs[0]


@pytest.mark.parametrize("repo", GATED)
def test_every_gated_catalog_repo_needs_a_token(repo: str) -> None:
    assert GATED, "the catalog marks gated models"
    errs = validate(body(gguf(f"hf://{repo}")))
    assert any(e.startswith("spec.model.tokenSecretRef:") for e in errs), errs
    with_token = gguf(f"hf://{repo}", tokenSecretRef={"name": "hf-token"})
    assert not any("tokenSecretRef" in e for e in validate(body(with_token)))


@pytest.mark.parametrize("repo", OPEN)
def test_open_repos_need_no_token(repo: str) -> None:
    assert gated_refusal(cr(gguf(f"hf://{repo}")).spec) is None


@pytest.mark.parametrize("source", ["hf://unsloth/gemma-3-1b-it", "hf://bartowski/meta-llama_Llama-3.2-3B-Instruct-GGUF"])
def test_public_reuploads_of_gated_weights_need_no_token(source: str) -> None:
    assert lookup_model(source) is not None and lookup_model(source).gated
    assert gated_refusal(cr(gguf(source)).spec) is None
    assert validate(body(gguf(source))) == []


def test_a_private_hub_mirror_is_not_second_guessed(world: Any) -> None:  # noqa: F811
    from slm_operator.hub import HubDefaults
    from slm_operator.render import RenderContext

    spec = gguf("hf://meta-llama/Llama-3.2-3B-Instruct", hub={"endpoint": "https://hub.mirror.internal"})
    assert validate(body(spec)) == []
    plain = cr(gguf("hf://meta-llama/Llama-3.2-3B-Instruct")).spec
    assert gated_refusal(plain) is not None and gated_refusal(plain, "https://hub.mirror.internal") is None
    w = world  # the operator-wide mirror (chart value hub.endpoint) counts too
    w.rec.ctx = RenderContext(hub=HubDefaults(endpoint="https://hub.mirror.internal"))
    w.body["spec"] = gguf("hf://meta-llama/Llama-3.2-1B-Instruct")
    w.run()
    assert w.cond("Degraded")["status"] == "False"
    assert any(o["kind"] == "Job" for o in w.kube.applied)


def test_gated_refusal_keeps_the_sizing_so_render_is_unchanged() -> None:
    a = resolve(cr(gguf("hf://meta-llama/Llama-3.2-3B-Instruct")).spec)
    b = resolve(cr(gguf("hf://meta-llama/Llama-3.2-3B-Instruct", tokenSecretRef={"name": "t"})).spec)
    assert a == b and a.fits, "resolve is the sizing only; the token check comes on top"


def test_the_operator_reports_a_gated_model_as_degraded_with_a_warning(world: Any) -> None:  # noqa: F811
    w = world
    w.body["spec"] = gguf("hf://meta-llama/Llama-3.2-1B-Instruct")
    w.run()
    deg = w.cond("Degraded")
    assert (deg["status"], deg["reason"]) == ("True", "HubTokenRequired")
    assert "model.tokenSecretRef" in deg["message"]
    assert w.cond("ModelReady")["reason"] == "HubTokenRequired"
    assert [e["type"] for e in w.kube.events] == ["Warning"] and w.kube.events[0]["reason"] == "HubTokenRequired"
    assert not any(o["kind"] == "Job" for o in w.kube.applied), "no Job that can only end in a 401"


# -- item 10: dtypes a model family cannot run in -----------------------------------------------

UNSAFE = [m for m in list_models() if m.family in FP16_UNSAFE_FAMILIES]
NO_BF16 = [g for g in list_gpus() if not g.bf16]
BF16 = [g for g in list_gpus() if g.bf16]


def test_the_catalog_has_what_this_file_checks() -> None:
    assert UNSAFE and NO_BF16 and BF16


@pytest.mark.parametrize("gpu", [g.product for g in NO_BF16])
@pytest.mark.parametrize("model", [m.id for m in UNSAFE])
def test_fp16_unsafe_families_are_refused_on_gpus_without_bf16(model: str, gpu: str) -> None:
    facts = lookup_model(model)
    for engine, fmt in (("vllm", None), ("auto", None), ("vllm", "none"), ("vllm", "awq"), ("vllm", "gptq")):
        with pytest.raises(UnsupportedDtypeError, match="bfloat16") as e:
            autoconfigure(facts, engine=engine, quant_format=fmt, gpu_product=gpu, gpu_count=1)
        assert gpu in str(e.value) and "compute capability 8.0" in str(e.value)


def test_gemma3_on_a_t4_offline_and_in_status_names_the_gpu() -> None:
    errs = validate(body(vllm("hf://google/gemma-3-1b-it", "Tesla-T4") | {
        "model": {"source": "hf://google/gemma-3-1b-it", "revision": SHA, "tokenSecretRef": {"name": "t"}}}))
    assert len(errs) == 1 and errs[0].startswith("spec.resources.gpu.product: gemma-3-1b-it (gemma3) overflows")
    r = resolve(cr(vllm("hf://unsloth/gemma-3-1b-it", "Tesla-T4")).spec)
    assert (r.fits, r.refusal, r.refusal_field) == (False, "UnsupportedDtype", "spec.resources.gpu.product")


@pytest.mark.parametrize("gpu", [g.product for g in BF16])
def test_fp16_unsafe_families_run_in_bf16_where_the_gpu_has_it(gpu: str) -> None:
    d = autoconfigure(lookup_model("google/gemma-3-1b-it"), engine="vllm", gpu_product=gpu, gpu_count=1)
    assert d.quant_type in ("bf16", "fp8", "w4a16") and d.quant_type != "fp16"


@pytest.mark.parametrize("fmt", ["none", "onnx"])
def test_fp16_is_refused_for_unsafe_families_on_any_hardware(fmt: str) -> None:
    engine = "vllm" if fmt == "none" else "onnxruntime"
    facts = lookup_model("google/gemma-3-4b-it")
    if fmt == "onnx":  # Gemma3 is refused for ONNX altogether; Gemma2 converts, but not in fp16
        facts = dataclasses.replace(facts, family="gemma2", architecture="Gemma2ForCausalLM", vision_params=0)
    with pytest.raises(UnsupportedDtypeError, match="inf/NaN") as e:
        autoconfigure(facts, engine=engine, quant_format=fmt, quant_type="fp16",
                      gpu_product="NVIDIA-L4" if fmt == "none" else None, gpu_count=1 if fmt == "none" else None)
    assert e.value.field == "spec.quantization.type"


def test_other_families_still_fall_back_to_fp16_on_a_t4() -> None:
    d = autoconfigure(lookup_model("Qwen/Qwen3-0.6B"), engine="vllm", gpu_product="Tesla-T4", gpu_count=1)
    assert d.fits and d.quant_type == "fp16"


def test_gemma3_is_not_sent_to_the_onnx_builder_the_quantizer_refuses() -> None:
    for m in UNSAFE:
        if m.family.startswith("gemma3"):
            d = autoconfigure(m, engine="auto", cpu_only=True)
            assert d.engine in ("llamacpp", "ollama") and d.quant_format == "gguf", (m.id, d.engine)
    errs = validate(body({"model": {"source": "hf://unsloth/gemma-3-1b-it", "revision": SHA},
                          "engine": {"name": "onnxruntime"}, "quantization": {"format": "onnx"}}))
    assert len(errs) == 1 and errs[0].startswith("spec.quantization: ") and "format gguf" in errs[0]


# -- item 11: GPU label variants ------------------------------------------------------------------

MIG = [("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", 5), ("NVIDIA-A100-SXM4-40GB-MIG-3g.20gb", 20),
       ("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", 10), ("NVIDIA-H100-80GB-HBM3-MIG-1g.10gb", 10),
       ("NVIDIA-H100-80GB-HBM3-MIG-1g.10gb.me", 10), ("NVIDIA-A100-SXM4-40GB-MIG-1c.3g.20gb", 20),
       ("NVIDIA-H200-MIG-1g.18gb", 18), ("NVIDIA-A30-MIG-1g.6gb", 6)]


@pytest.mark.parametrize(("label", "gb"), MIG)
def test_a_mig_slice_has_the_slice_memory_not_the_gpu(label: str, gb: int) -> None:
    g = lookup_gpu(label)
    whole = lookup_gpu(label.split("-MIG-")[0])
    assert g.product == label and g.mig_profile
    assert g.memory_mib < whole.memory_mib
    assert 0.85 * gb * 1024 <= g.memory_mib <= 0.976 * gb * 1024  # 1g.5gb on an A100 is 4864 MiB


def test_a_model_that_fits_the_gpu_does_not_fit_its_slice() -> None:
    facts = lookup_model("Qwen/Qwen3-8B")
    assert autoconfigure(facts, engine="vllm", gpu_product="NVIDIA-A100-SXM4-40GB", gpu_count=1).fits
    d = autoconfigure(facts, engine="vllm", quant_format="none", gpu_product="NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",
                      gpu_count=1)
    assert not d.fits and d.capacity_bytes < 5 * GIB


def test_one_mig_slice_per_container() -> None:
    r = resolve(cr(vllm("hf://Qwen/Qwen3-0.6B", "NVIDIA-A100-SXM4-40GB-MIG-3g.20gb", count=2)).spec)
    assert (r.fits, r.refusal_field) == (False, "spec.resources.gpu.count")
    with pytest.raises(MigSliceError, match="one MIG slice"):
        autoconfigure(lookup_model("Qwen/Qwen3-0.6B"), engine="vllm",
                      gpu_product="NVIDIA-A100-SXM4-40GB-MIG-3g.20gb", gpu_count=2)


@pytest.mark.parametrize("label", ["NVIDIA-B300-SXM6-288GB", "NVIDIA-B300-SXM6-288GB-MIG-1g.36gb",
                                   "NVIDIA-A100-SXM4-40GB-MIG-7g.80gb", "NVIDIA-A100-SXM4-40GB-MIG-big"])
def test_unknown_variants_are_refused_naming_the_label_and_the_fix(label: str) -> None:
    with pytest.raises(UnknownGpuError) as e:
        lookup_gpu(label)
    assert f"resources.gpu.product {label!r}" in str(e.value)
    assert "kubectl get nodes -L nvidia.com/gpu.product" in str(e.value)
    errs = validate(body(vllm("hf://Qwen/Qwen3-0.6B", label)))
    assert len(errs) == 1 and errs[0].startswith("spec.resources.gpu.product: ")


def test_shared_gpus_are_known_and_say_so() -> None:
    g = lookup_gpu("NVIDIA-L4-SHARED")
    assert g.shared and g.memory_mib == lookup_gpu("NVIDIA-L4").memory_mib
    d = autoconfigure(lookup_model("Qwen/Qwen3-0.6B"), engine="vllm", gpu_product="NVIDIA-L4-SHARED", gpu_count=1)
    assert "shared with other pods" in d.reason


@pytest.mark.parametrize(("given", "label"), [("L4", "NVIDIA-L4"), ("nvidia-l4", "NVIDIA-L4"), ("T4", "Tesla-T4"),
                                              ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"),
                                              ("A100-MIG-3g.20gb", "NVIDIA-A100-SXM4-40GB-MIG-3g.20gb"),
                                              ("T4-SHARED", "Tesla-T4-SHARED")])
def test_the_node_selector_gets_the_node_label_value_not_the_alias(given: str, label: str) -> None:
    from slm_operator.render import RenderContext, render

    doc = cr(vllm("hf://Qwen/Qwen3-0.6B", given))
    dep = next(o for o in render(doc, RenderContext()) if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == label


def test_every_catalog_gpu_is_its_own_label_value() -> None:
    for g in list_gpus():
        assert lookup_gpu(g.product).product == g.product
        assert api.re.fullmatch(api.LABEL_VALUE_PATTERN, g.product) and len(g.product) <= 63


# -- item 13: after a refused write ----------------------------------------------------------------

def test_a_refused_pvc_growth_leaves_the_rest_reconciled_and_the_new_generation_observed(world: Any) -> None:  # noqa: F811
    w = world
    _serving(w)
    w.body["metadata"]["generation"] = 2
    w.body["spec"]["storage"] = {"size": "500Gi"}
    w.body["spec"]["replicas"] = 3
    w.kube.refuse["PersistentVolumeClaim"] = (
        403, 'persistentvolumeclaims "qwen3-small-model-cache" is forbidden: only dynamically provisioned pvc '
             'can be resized and the storageclass that provisions the pvc must support resize')
    before = len(w.kube.applied)
    out = w.run()
    applied = w.kube.applied[before:]
    dep = next(o for o in applied if o["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 3, "the Deployment after the refused PVC was still applied"
    deg = w.cond("Degraded")
    assert (deg["status"], deg["reason"]) == ("True", "ApplyRejected")
    assert f"PersistentVolumeClaim {w.name}-model-cache (403)" in deg["message"]
    assert "must support resize" in deg["message"]
    assert {c["type"]: c["observedGeneration"] for c in w.body["status"]["conditions"]} == {
        c["type"]: 2 for c in w.body["status"]["conditions"]}
    assert w.body["status"].get("observedGeneration", 2) == 2
    assert w.kube.events[-1]["type"] == "Warning" and w.kube.events[-1]["reason"] == "ApplyRejected"
    assert out.requeue_after is not None
    del w.kube.refuse["PersistentVolumeClaim"]
    w.run()
    assert w.cond("Degraded")["status"] == "False"


CHILD_KINDS = ["Secret", "PersistentVolumeClaim", "NetworkPolicy", "Service", "Job", "Deployment",
               "PodDisruptionBudget", "HorizontalPodAutoscaler"]


@pytest.mark.parametrize("kind", CHILD_KINDS)
def test_a_refused_write_of_any_child_kind_is_degraded_and_the_rest_is_applied(world: Any, kind: str) -> None:  # noqa: F811
    from slm_operator.render import plan

    w = world
    spec = w.body["spec"]
    if kind == "HorizontalPodAutoscaler":
        spec.pop("replicas", None)
        spec["autoscaling"] = {"minReplicas": 2, "maxReplicas": 3}
    wanted = {o["kind"] for o in plan(api.SLMDeployment.model_validate(defaulted(w.body)),
                                      w.rec.ctx).all()}
    assert kind in wanted
    w.kube.refuse[kind] = (422, f'{kind} "x" is invalid: spec: Invalid value: "y": refused for the test')
    w.run()
    w.live_children()
    job = next((o for o in w.kube.applied if o["kind"] == "Job"), None)
    if job is not None:
        live = w.cache.get("Job", NS, job["metadata"]["name"])
        live["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        w.cache.put("Job", live)
    w.run()
    applied = {o["kind"] for o in w.kube.applied}
    blocked = {kind} | ({"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} & wanted
                        if kind == "Job" else set())  # serving waits for the artifact the Job makes
    assert wanted - blocked <= applied, f"not applied after the refused {kind}: {wanted - blocked - applied}"
    deg = w.cond("Degraded")
    assert (deg["status"], deg["reason"]) == ("True", "ApplyRejected")
    assert f" {kind} " in deg["message"] and "refused for the test" in deg["message"]
    assert all(c["observedGeneration"] == 1 for c in w.body["status"]["conditions"])
    assert any(e["type"] == "Warning" and e["reason"] == "ApplyRejected" for e in w.kube.events)


# -- kin of item 6: other catalog facts admission cannot see name their field ---------------------

def test_a_context_beyond_the_model_names_model_context_length() -> None:
    spec = gguf("hf://Qwen/Qwen3-0.6B", contextLength=200000)
    errs = validate(body(spec))
    assert len(errs) == 1 and errs[0].startswith("spec.model.contextLength: Context 200000 is outside 256..40960")
    assert resolve(cr(spec).spec).refusal == "ContextTooLong"


def test_a_gpu_count_that_does_not_divide_the_heads_names_the_count() -> None:
    errs = validate(body(vllm("hf://Qwen/Qwen3-0.6B", "NVIDIA-L4", count=3)))
    assert len(errs) == 1 and errs[0].startswith("spec.resources.gpu.count: vLLM tensor parallelism")


@pytest.mark.parametrize(("spec", "reason", "field"), [
    (vllm("hf://unsloth/gemma-3-4b-it", "Tesla-T4"), "UnsupportedDtype", "resources.gpu.product"),
    (vllm("hf://Qwen/Qwen3-0.6B", "NVIDIA-B300-SXM6-288GB"), "UnknownGPUProduct", "resources.gpu.product"),
    (vllm("hf://Qwen/Qwen3-0.6B", "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", count=2), "UnsupportedGPUCount",
     "resources.gpu.count"),
], ids=["bf16", "unknown-gpu", "mig-count"])
def test_catalog_refusals_are_degraded_with_their_reason_and_a_warning(world: Any, spec: dict[str, Any],  # noqa: F811
                                                                       reason: str, field: str) -> None:
    w = world
    w.body["spec"] = spec
    w.run()
    deg = w.cond("Degraded")
    assert (deg["status"], deg["reason"]) == ("True", reason) and field in deg["message"]
    assert w.kube.events[-1]["type"] == "Warning" and w.kube.events[-1]["reason"] == reason
    assert not any(o["kind"] in ("Job", "Deployment") for o in w.kube.applied)
    offline = validate(body(spec))
    assert len(offline) == 1 and offline[0].startswith(f"spec.{field}: ") and deg["message"] in offline[0]
