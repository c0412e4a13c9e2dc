"""The spec -> sizing bridge: omitted resources come from the estimate; misfits are refused."""

from slm_operator import api
from slm_operator.render import render
from slm_operator.resolve import resolve
from slm_operator.validate import defaulted, validate


def spec(**s) -> api.SLMDeploymentSpec:
    body = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "m"}, "spec": s}
    return api.SLMDeployment.model_validate(defaulted(body)).spec


def test_omitted_resources_are_sized_from_the_estimate() -> None:
    small = resolve(spec(model={"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"},
                         engine={"name": "onnxruntime"}))
    big = resolve(spec(model={"source": "hf://Qwen/Qwen3-8B", "revision": "main"},
                       engine={"name": "onnxruntime"}))
    assert small.fits and small.tier == "Micro" and big.tier == "Small"
    assert small.format == "onnx" and small.qtype == "int4"
    from slm_operator.diff import parse_quantity

    assert parse_quantity(big.memory) > parse_quantity(small.memory) > 0
    assert small.weights_bytes and small.total_bytes >= small.weights_bytes


def test_user_resources_win() -> None:
    r = resolve(spec(model={"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"}, engine={"name": "onnxruntime"},
                     resources={"cpu": "3", "memory": "5Gi"}))
    assert (r.cpu, r.memory) == ("3", "5Gi")


def test_vllm_context_and_utilization_chosen_to_fit() -> None:
    r = resolve(spec(model={"source": "hf://microsoft/Phi-4-mini-instruct", "revision": "main"},
                     engine={"name": "vllm"}, quantization={"format": "awq"},
                     resources={"gpu": {"count": 1, "product": "NVIDIA-L4"}}))
    assert r.fits and r.gpu_count == 1
    assert 4096 <= r.context_length <= 131072
    assert 50 <= (r.gpu_memory_utilization_percent or 0) <= 95


def test_auto_engine_picks_for_the_hardware_and_says_why() -> None:
    cpu = resolve(spec(model={"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"}))
    gpu = resolve(spec(model={"source": "hf://Qwen/Qwen3-4B", "revision": "main"},
                       resources={"gpu": {"count": 1, "product": "NVIDIA-L4"}}))
    assert cpu.engine in ("onnxruntime", "ollama") and gpu.engine == "vllm"
    assert gpu.reason


def test_impossible_fit_is_refused_with_numbers_and_an_alternative() -> None:
    body = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment", "metadata": {"name": "big"},
            "spec": {"model": {"source": "hf://Qwen/Qwen3-14B", "revision": "main"}, "engine": {"name": "vllm"},
                     "quantization": {"format": "none", "type": "bf16"},
                     "resources": {"gpu": {"count": 1, "product": "Tesla-T4"}}}}
    r = resolve(api.SLMDeployment.model_validate(defaulted(body)).spec)
    assert not r.fits
    assert "GiB" in r.reason and ("awq" in r.reason.lower() or "fp8" in r.reason.lower()), r.reason
    errors = validate(body)
    assert errors and "does not fit" in errors[0]


def test_unknown_model_is_not_guessed_silently() -> None:
    s = spec(model={"source": "hf://acme/secret-model", "revision": "main"}, engine={"name": "onnxruntime"})
    r = resolve(s)
    assert "not in the sizing catalog" in r.reason and "spec.resources" in r.reason
    objs = render(api.SLMDeployment.model_validate(defaulted({"apiVersion": "slm.ai/v1alpha1",
                  "kind": "SLMDeployment", "metadata": {"name": "m"}, "spec": s.model_dump(by_alias=True,
                                                                                           exclude_none=True)})))
    assert any(o["kind"] == "Deployment" for o in objs)


def test_sizing_is_memoized_by_the_spec_and_bounded(monkeypatch) -> None:
    """A CR is resolved on every reconcile: the same spec is sized once; another spec, or a
    changed one, is sized again; the memo keeps at most SIZED_MEMO_SIZE specs."""
    from slm_operator import resolve as rs

    calls: list[str] = []
    real = rs._sized_uncached

    def counting(s: api.SLMDeploymentSpec):
        calls.append(s.model.source)
        return real(s)

    monkeypatch.setattr(rs, "_sized_uncached", counting)
    monkeypatch.setattr(rs, "_sized_memo", type(rs._sized_memo)())
    monkeypatch.setattr(rs, "SIZED_MEMO_SIZE", 2)
    a = dict(model={"source": "hf://Qwen/Qwen3-0.6B", "revision": "main"}, engine={"name": "onnxruntime"})
    first = resolve(spec(**a))
    assert resolve(spec(**a)) is first and len(calls) == 1
    bigger = resolve(spec(**a, resources={"cpu": "3", "memory": "5Gi"}))
    assert (bigger.cpu, bigger.memory) == ("3", "5Gi") and len(calls) == 2
    resolve(spec(model={"source": "hf://Qwen/Qwen3-8B", "revision": "main"}, engine={"name": "onnxruntime"}))
    assert len(rs._sized_memo) == 2
    assert resolve(spec(**a)) == first and len(calls) == 4  # evicted: sized again, same answer
