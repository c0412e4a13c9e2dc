"""The vLLM args agree with the artifact the quantization Job writes, for every vLLM format.

The folder the Job publishes decides what vLLM must be told: awq/gptq folders carry a
compressed-tensors quantization_config (llm-compressor's save_compressed), which vLLM reads
and which a `--quantization awq_marlin` contradicts (vLLM refuses to start); fp8 and none are
the 16-bit source folder, fp8 quantized by vLLM at load. Each format's config goes through the
operator's render, the launcher, and (in the vLLM venv, tests/engines/vllm_env.sh) vLLM's own
parser and model-config checks.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest

from slm_operator import api
from slm_operator.render import render
from slm_operator.render.engines import ARTIFACT_QUANTIZATION
from slm_operator.validate import defaulted
from slm_quantizer import awq
from slm_vllm import VLLM_VERSION
from slm_vllm.artifact import agree_with_folder, fit_max_len, folder_quantization
from slm_vllm.launcher import plan

HERE = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SLM_CACHE", Path.home() / ".cache" / "slm-operator")) / f"venv-vllm-{VLLM_VERSION}"

# A small Llama-architecture config (what vLLM's config checks need; no weights are read).
BASE_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
    "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
    "vocab_size": 1024, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16",
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}


def compressed_tensors_config(symmetric: bool) -> dict:
    """The quantization_config llm-compressor writes for W4A16 (AWQ: asymmetric, GPTQ: symmetric)."""
    return {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "output_activations": None,
                                      "weights": {"num_bits": 4, "type": "int", "symmetric": symmetric,
                                                  "strategy": "group", "group_size": 128, "dynamic": False,
                                                  "actorder": None, "block_structure": None, "observer": "minmax",
                                                  "observer_kwargs": {}}}},
        "ignore": ["lm_head"], "kv_cache_scheme": None, "sparsity_config": {}, "global_compression_ratio": None,
    }


def artifact_config(fmt: str) -> dict:
    """config.json of the folder the Job publishes for fmt."""
    if fmt in ("awq", "gptq"):
        return {**BASE_CONFIG, "quantization_config": compressed_tensors_config(symmetric=fmt == "gptq")}
    return dict(BASE_CONFIG)  # none, fp8: the source folder as it is


FORMATS = sorted(ARTIFACT_QUANTIZATION)


def _cr(fmt: str) -> api.SLMDeployment:
    spec = {"model": {"source": "hf://microsoft/Phi-4-mini-instruct", "revision": "abc"},
            "engine": {"name": "vllm"}, "quantization": {"format": fmt},
            "resources": {"gpu": {"count": 1, "product": "NVIDIA-L4"}}}
    body = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": copy.deepcopy(spec)}
    return api.SLMDeployment.model_validate(defaulted(body))


def rendered_serve_args(fmt: str, folder: Path) -> list[str]:
    """The vllm container's args for fmt, with the artifact path pointed at folder."""
    dep = next(o for o in render(_cr(fmt)) if o["kind"] == "Deployment")
    args = list(dep["spec"]["template"]["spec"]["containers"][0]["args"])
    dash = args.index("--")
    args[dash + 1] = str(folder)
    key = folder.parent / "api-key"
    key.write_text("k")
    args[args.index("--api-key-file") + 1] = str(key)
    return args


def _folder(tmp_path: Path, fmt: str) -> Path:
    folder = tmp_path / fmt
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(artifact_config(fmt)))
    return folder


def test_the_table_matches_what_the_quantizer_saves():
    assert ARTIFACT_QUANTIZATION["awq"] == ARTIFACT_QUANTIZATION["gptq"] == awq.SAVED_QUANT_METHOD
    assert set(ARTIFACT_QUANTIZATION) == {"none", "fp8", "awq", "gptq"}


def test_the_quantizer_refuses_to_publish_another_method(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(artifact_config("awq")))
    assert awq.check_saved_format(tmp_path) == "compressed-tensors"
    (tmp_path / "config.json").write_text(json.dumps({**BASE_CONFIG, "quantization_config": {"quant_method": "awq"}}))
    with pytest.raises(RuntimeError, match="not 'compressed-tensors'"):
        awq.check_saved_format(tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rendered_args_agree_with_the_artifact(tmp_path, fmt):
    folder = _folder(tmp_path, fmt)
    args = rendered_serve_args(fmt, folder)
    method = folder_quantization(folder)
    assert method == ARTIFACT_QUANTIZATION[fmt]
    if method:  # the folder names its method: vLLM reads it, no flag may contradict it
        assert "--quantization" not in args
    elif fmt == "fp8":  # a 16-bit folder quantized at load
        assert args[args.index("--quantization") + 1] == "fp8"
    else:
        assert "--quantization" not in args
        assert args[args.index("--dtype") + 1] in ("bfloat16", "float16")
    # The launcher passes the operator's args through unchanged (nothing to correct).
    cmd, _, _ = plan(args, {})
    assert cmd[2:] == args[args.index("--") + 1:]


@pytest.mark.parametrize(("flag", "kept"), [("awq_marlin", False), ("gptq_marlin", False), ("fp8", False),
                                            ("compressed-tensors", True)])
def test_launcher_drops_a_flag_the_folder_contradicts(tmp_path, flag, kept):
    folder = _folder(tmp_path, "awq")
    args = [str(folder), "--served-model-name", "m", "--quantization", flag, "--port", "8000"]
    out, note = agree_with_folder(args)
    if kept:
        assert out == args and note is None
    else:
        assert out == [str(folder), "--served-model-name", "m", "--port", "8000"]
        assert "compressed-tensors" in note and flag in note
    # A folder of vLLM's own AWQ format keeps the Marlin override vLLM accepts for it.
    plain = tmp_path / "plain-awq"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({**BASE_CONFIG, "quantization_config": {"quant_method": "awq"}}))
    assert agree_with_folder([str(plain), "--quantization=awq_marlin"])[1] is None
    # No folder config (fp8 at load): the flag stays.
    assert agree_with_folder([str(_folder(tmp_path, "fp8")), "--quantization", "fp8"])[1] is None


def _short_folder(tmp_path: Path, **extra) -> Path:
    folder = tmp_path / "short"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**BASE_CONFIG, "max_position_embeddings": 2048, **extra}))
    return folder


def test_launcher_lowers_a_context_the_folder_does_not_support(tmp_path):
    folder = _short_folder(tmp_path)
    args, note = fit_max_len([str(folder), "--max-model-len", "4096", "--port", "8000"])
    assert args == [str(folder), "--max-model-len", "2048", "--port", "8000"] and "2048" in note
    assert fit_max_len([str(folder), "--max-model-len=1024"]) == ([str(folder), "--max-model-len=1024"], None)
    # Scaled rope: vLLM's own arithmetic decides; the launcher leaves the flag alone.
    scaled = _short_folder(tmp_path, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    assert fit_max_len([str(scaled), "--max-model-len", "8192"])[1] is None


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists() or not list(VENV.glob(".complete-*")):
        pytest.skip(f"vLLM {VLLM_VERSION} venv not found at {VENV}: create it with tests/engines/vllm_env.sh")
    return python


def _vllm_check(python: Path, cases: list[list[str]]) -> list[dict]:
    out = subprocess.run([str(python), str(HERE / "vllm_config_check.py")], input=json.dumps({"cases": cases}),
                         capture_output=True, text=True, timeout=600, check=True,
                         env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"})
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["vllm_version"] == VLLM_VERSION
    return report["results"]


def test_vllm_accepts_every_formats_rendered_args_for_its_artifact(tmp_path, vllm_python):
    cases = []
    for fmt in FORMATS:
        args = rendered_serve_args(fmt, _folder(tmp_path, fmt))
        cmd, _, _ = plan(args, {})
        cases.append(cmd[2:])
    # The old render (--quantization awq_marlin on a compressed-tensors folder): vLLM must refuse it,
    # so the passes above mean something.
    wrong = [str(tmp_path / "awq"), "--quantization", "awq_marlin"]
    # A model outside the catalog gets the default context; its folder supports less.
    short, _, _ = plan([str(_short_folder(tmp_path)), "--max-model-len", "4096"], {"VLLM_API_KEY": "k"})
    too_long = [str(tmp_path / "short"), "--max-model-len", "4096"]
    results = _vllm_check(vllm_python, [*cases, short[2:], too_long, wrong])
    assert results[-3]["ok"], results[-3]
    assert not results[-2]["ok"] and "max_model_len" in results[-2]["error"], results[-2]
    for fmt, res in zip(FORMATS, results, strict=False):
        assert res["ok"], (fmt, res)
        want = ARTIFACT_QUANTIZATION[fmt] or ("fp8" if fmt == "fp8" else None)
        assert res["quantization"] == want, (fmt, res)
    assert not results[-1]["ok"] and "compressed-tensors" in results[-1]["error"], results[-1]
