"""The vLLM launcher's option mapping, argument checks and refusal to start unsafely."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from slm_vllm import OptionsError, UnsafeArgsError, VllmOptions, build_args, check_serve_args
from slm_vllm.launcher import LaunchError, plan
from slm_vllm.options import load_options, options_from_mapping

REPO = Path(__file__).resolve().parents[2]


def _opts(**kw) -> VllmOptions:
    return VllmOptions(model_path="/models/qwen3", served_model_name="qwen3-0.6b", **kw)


def test_minimal_options_render_positional_model_and_hardening_flags():
    assert build_args(_opts()) == [
        "/models/qwen3", "--served-model-name", "qwen3-0.6b", "--host", "0.0.0.0", "--port", "8000",
        "--tensor-parallel-size", "1", "--disable-fastapi-docs",
    ]


def test_every_typed_option_maps_to_its_flag():
    args = build_args(_opts(
        port=9000, max_model_len=4096, gpu_memory_utilization="0.9", max_num_seqs=32,
        tensor_parallel_size=2, enable_prefix_caching=False, quantization="awq_marlin",
        dtype="float16", kv_cache_dtype="fp8", trust_remote_code=True,
        extra_args=("--enable-chunked-prefill", "--max-num-batched-tokens", "8192"),
    ))
    pairs = dict(itertools.pairwise(args))
    assert pairs["--port"] == "9000"
    assert pairs["--max-model-len"] == "4096"
    assert pairs["--gpu-memory-utilization"] == "0.90"
    assert pairs["--max-num-seqs"] == "32"
    assert pairs["--tensor-parallel-size"] == "2"
    assert pairs["--quantization"] == "awq_marlin"
    assert pairs["--dtype"] == "float16"
    assert pairs["--kv-cache-dtype"] == "fp8"
    assert "--no-enable-prefix-caching" in args and "--enable-prefix-caching" not in args
    assert "--trust-remote-code" in args
    assert args[-3:] == ["--enable-chunked-prefill", "--max-num-batched-tokens", "8192"]
    assert build_args(_opts(enable_prefix_caching=True)).count("--enable-prefix-caching") == 1


def test_trust_remote_code_is_off_unless_asked():
    assert "--trust-remote-code" not in build_args(_opts())
    with pytest.raises(UnsafeArgsError, match="trust_remote_code"):
        build_args(_opts(extra_args=("--trust-remote-code",)))


@pytest.mark.parametrize("arg", [
    "--api-key=secret", "--api_key", "--allowed-local-media-path=/", "--middleware", "--config",
    "--trust-request-chat-template", "--enable-log-requests", "--enable-log-outputs",
    "--kv-transfer-config.kv_connector_module_path", "--tool-parser-plugin=/x.py",
    "--worker-extension-cls", "--logits-processors", "--enable-tokenizer-info-endpoint",
    "--profiler-config", "--tool-server=demo", "--hf-token=x", "--allowed-local-media",  # abbreviation
])
def test_dangerous_extra_args_are_refused(arg):
    with pytest.raises(UnsafeArgsError, match="refused"):
        build_args(_opts(extra_args=(arg,)))
    with pytest.raises(UnsafeArgsError):  # also in a full rendered list
        check_serve_args(["/m", arg], owned_allowed=True)


@pytest.mark.parametrize("arg", ["--port=1", "--served-model-name", "--model", "--no-enable-prefix-caching",
                                 "--trust-remote", "--max_model_len=10", "--host"])
def test_extra_args_cannot_override_typed_options(arg):
    with pytest.raises(UnsafeArgsError, match="typed option"):
        build_args(_opts(extra_args=(arg,)))


def test_short_flags_must_use_long_form_but_values_pass():
    with pytest.raises(UnsafeArgsError, match="long form"):
        build_args(_opts(extra_args=("-tp", "2")))
    args = build_args(_opts(extra_args=("--seed", "-1", "-O3", "--model-impl", "vllm")))
    assert args[-5:] == ["--seed", "-1", "-O3", "--model-impl", "vllm"]


@pytest.mark.parametrize(("key", "value"), [
    ("gpu_memory_utilization", "1.5"), ("gpu_memory_utilization", "abc"), ("port", 80),
    ("max_model_len", True), ("tensor_parallel_size", 0), ("dtype", "int4"), ("quantization", "AWQ; rm"),
    ("trust_remote_code", "yes"), ("served_model_name", "bad name"),
])
def test_invalid_options_are_rejected(key, value):
    with pytest.raises(OptionsError, match=key):
        options_from_mapping({"model_path": "/m", "served_model_name": "m", key: value})


def test_config_file_unknown_key_and_yaml(tmp_path):
    bad = tmp_path / "engine.json"
    bad.write_text(json.dumps({"model_path": "/m", "served_model_name": "m", "max_model_length": 1}))
    with pytest.raises(OptionsError, match=r"unknown option.*max_model_length"):
        load_options(bad)
    good = tmp_path / "engine.yaml"
    good.write_text("model_path: /m\nserved_model_name: m\nmax_num_seqs: 8\nextra_args: [--seed, '1']\n")
    assert load_options(good) == VllmOptions(model_path="/m", served_model_name="m", max_num_seqs=8,
                                             extra_args=("--seed", "1"))


def _config(tmp_path: Path) -> str:
    path = tmp_path / "engine.json"
    path.write_text(json.dumps({"model_path": "/m", "served_model_name": "m"}))
    return str(path)


def test_launcher_requires_an_api_key(tmp_path):
    with pytest.raises(LaunchError, match="no API key"):
        plan(["--config", _config(tmp_path)], {})
    cmd, env, _ = plan(["--config", _config(tmp_path), "--allow-unauthenticated"], {"VLLM_API_KEY": " "})
    assert "VLLM_API_KEY" not in env and cmd[:3] == ["vllm", "serve", "/m"]


def test_launcher_reads_key_file_into_env_never_into_args(tmp_path):
    key = tmp_path / "api-key"
    key.write_text("s3cret-key\n")
    cmd, env, _ = plan(["--config", _config(tmp_path), "--api-key-file", str(key)], {"PATH": "/bin"})
    assert env["VLLM_API_KEY"] == "s3cret-key"
    assert not any("s3cret" in a for a in cmd)
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == "/bin"
    key.write_text("")
    with pytest.raises(LaunchError, match="empty"):
        plan(["--config", _config(tmp_path), "--api-key-file", str(key)], {})


@pytest.mark.parametrize("var", ["VLLM_SERVER_DEV_MODE", "VLLM_ALLOW_RUNTIME_LORA_UPDATING",
                                 "VLLM_ALLOW_INSECURE_SERIALIZATION"])
def test_launcher_refuses_dev_mode_environment(tmp_path, var):
    with pytest.raises(LaunchError, match=var):
        plan(["--config", _config(tmp_path)], {"VLLM_API_KEY": "k", var: "1"})
    plan(["--config", _config(tmp_path)], {"VLLM_API_KEY": "k", var: "0"})  # explicit off is fine


def test_launcher_passthrough_args_are_checked(tmp_path):
    cmd, _, _ = plan(["--", "/m", "--served-model-name", "m", "--trust-remote-code"], {"VLLM_API_KEY": "k"})
    assert cmd == ["vllm", "serve", "/m", "--served-model-name", "m", "--trust-remote-code"]
    with pytest.raises(UnsafeArgsError):
        plan(["/m", "--api-key", "k"], {"VLLM_API_KEY": "k"})
    with pytest.raises(LaunchError, match="not both"):
        plan(["--config", _config(tmp_path), "/m"], {"VLLM_API_KEY": "k"})


def test_main_execs_vllm_with_checked_args_and_key_in_env(tmp_path):
    # A stand-in `vllm` executable records what it was exec'd with: this checks the real exec path.
    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "print(json.dumps({'argv': sys.argv[1:], 'key': os.environ.get('VLLM_API_KEY'),"
                    " 'dev': os.environ.get('VLLM_SERVER_DEV_MODE')}))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "VLLM_API_KEY": "k1",
           "PYTHONPATH": str(REPO / "runtime-images" / "vllm")}
    out = subprocess.run([sys.executable, "-m", "slm_vllm", "--config", _config(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(out.stdout)
    assert seen["argv"][:2] == ["serve", "/m"] and seen["key"] == "k1" and seen["dev"] is None
    bad = subprocess.run([sys.executable, "-m", "slm_vllm", "--config", _config(tmp_path)],
                         env={**env, "VLLM_SERVER_DEV_MODE": "1"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "VLLM_SERVER_DEV_MODE" in bad.stderr and bad.stdout == ""


def test_importable_without_vllm():
    code = "import sys, slm_vllm; assert 'vllm' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO / "runtime-images" / "vllm")})


@pytest.mark.parametrize("arg", ["--tool-call-parser=pythonic", "--enable-auto-tool-choice", "--reasoning-parser",
                                 "--reasoning_parser=deepseek_r1"])
def test_tool_and_reasoning_parsers_only_from_typed_options(arg: str) -> None:
    """extra_args come last on the command line: a parser flag there would silently win over the
    catalog's or the spec's typed choice, so it is refused, naming the typed option."""
    from slm_vllm.args import UnsafeArgsError, check_serve_args

    with pytest.raises(UnsafeArgsError, match="typed option"):
        check_serve_args([arg], owned_allowed=False)
    check_serve_args([arg], owned_allowed=True)  # the operator's own rendering may set it
