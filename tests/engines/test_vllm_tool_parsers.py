"""vLLM tool calling and reasoning per model family (issue 12 item 8, follow-up).

Without --enable-auto-tool-choice --tool-call-parser <name>, vLLM refuses `tools` with
`tool_choice: "auto"`; without --reasoning-parser, Qwen3's <think> text lands in `content`.
The operator renders the parser the catalog names for the model (data/models.yaml), none for
models whose chat template has no tools, and spec.engine.vllm.toolCallParser / reasoningParser
override it ("none" turns it off).

Fast tests: the rendered args per catalog family, the overrides, admission's refusal of an
unknown name. Slow test (vLLM venv, tests/engines/vllm_env.sh; skipped with the reason
without it): every name the operator can render is in vLLM 0.33.0's own registries, the
operator's name lists equal them, and vLLM's own `vllm serve` parser and validators
(validate_parsed_serve_args, validate_api_server_args) accept the rendered args of every
catalog model.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from slm_operator import api
from slm_operator.engines.vllm_parsers import NONE, VLLM_REASONING_PARSERS, VLLM_TOOL_CALL_PARSERS
from slm_operator.render import render
from slm_operator.sizing.catalog import list_models
from slm_operator.validate import defaulted
from slm_vllm.args import check_serve_args

HERE = Path(__file__).resolve().parent
VLLM_VERSION = "0.33.0"  # slm_vllm.VLLM_VERSION (runtime-images/vllm): the image's pin
CACHE = Path(os.environ.get("SLM_CACHE", Path.home() / ".cache" / "slm-operator"))
VENV = CACHE / f"venv-vllm-{VLLM_VERSION}"

# (source, tool-call parser, reasoning parser): what vLLM's tool-calling docs name for the
# model's own chat template; None where the template renders no tools.
FAMILIES = [
    ("hf://Qwen/Qwen3-0.6B", "hermes", "qwen3"),
    ("hf://Qwen/Qwen3-8B", "hermes", "qwen3"),
    ("hf://meta-llama/Llama-3.2-1B-Instruct", "llama3_json", None),
    ("hf://microsoft/Phi-4-mini-instruct", "phi4_mini_json", None),
    ("hf://mistralai/Mistral-7B-Instruct-v0.3", "mistral", None),
    ("hf://google/gemma-3-1b-it", None, None),
    ("hf://microsoft/Phi-3.5-mini-instruct", None, None),
    ("hf://microsoft/phi-4", None, None),
    ("hf://HuggingFaceTB/SmolLM2-1.7B-Instruct", None, None),
    ("hf://example-org/not-in-catalog", None, None),
]


def cr(source: str, vllm: dict[str, Any] | None = None) -> api.SLMDeployment:
    spec: dict[str, Any] = {
        "model": {"source": source, "revision": "0123456789abcdef0123456789abcdef01234567"},
        "engine": {"name": "vllm", **({"vllm": vllm} if vllm else {})},
        "quantization": {"format": "none"},
        "resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}}}
    if source.startswith(("hf://meta-llama/", "hf://mistralai/")):  # gated: a hub token is required
        spec["model"]["tokenSecretRef"] = {"name": "hub", "key": "token"}
    body = {"apiVersion": "slm.ai/v1alpha1", "kind": "SLMDeployment",
            "metadata": {"name": "m", "namespace": "ns", "uid": "uid-1"}, "spec": spec}
    return api.SLMDeployment.model_validate(defaulted(body))


def serve_args(obj: api.SLMDeployment) -> list[str]:
    """The `vllm serve` arguments of the rendered vLLM container (after the launcher's `--`)."""
    (container,) = [c for o in render(obj) if o["kind"] == "Deployment"
                    for c in o["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm"]
    args = container["args"]
    return args[args.index("--") + 1:]


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


@pytest.mark.parametrize(("source", "tool", "reasoning"), FAMILIES, ids=[f[0].rsplit("/", 1)[1] for f in FAMILIES])
def test_rendered_parsers_per_family(source: str, tool: str | None, reasoning: str | None) -> None:
    args = serve_args(cr(source))
    assert flag(args, "--tool-call-parser") == tool
    assert ("--enable-auto-tool-choice" in args) is (tool is not None)
    assert flag(args, "--reasoning-parser") == reasoning
    # The vLLM launcher passes them on (--reasoning-parser is no abbreviation of the refused
    # --reasoning-parser-plugin: argparse takes the exact flag first).
    check_serve_args(args, owned_allowed=True)


def test_spec_overrides_and_disables() -> None:
    qwen = "hf://Qwen/Qwen3-0.6B"
    args = serve_args(cr(qwen, {"toolCallParser": "qwen3_xml"}))
    assert flag(args, "--tool-call-parser") == "qwen3_xml" and flag(args, "--reasoning-parser") == "qwen3"
    args = serve_args(cr(qwen, {"toolCallParser": NONE}))
    assert "--enable-auto-tool-choice" not in args and "--tool-call-parser" not in args
    assert flag(args, "--reasoning-parser") == "qwen3"
    args = serve_args(cr(qwen, {"reasoningParser": NONE}))
    assert "--reasoning-parser" not in args and flag(args, "--tool-call-parser") == "hermes"
    # A model the catalog does not know gets a parser only when the spec names one.
    args = serve_args(cr("hf://example-org/not-in-catalog", {"toolCallParser": "hermes",
                                                             "reasoningParser": "deepseek_r1"}))
    assert args[-5:] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                         "--reasoning-parser", "deepseek_r1"]
    # extraArgs stay last (as before): they come after the parser flags.
    args = serve_args(cr(qwen, {"extraArgs": ["--seed", "7"]}))
    assert args[-2:] == ["--seed", "7"] and args.index("--tool-call-parser") < args.index("--seed")


@pytest.mark.parametrize(("field", "value"), [("toolCallParser", "hermes2"), ("reasoningParser", "qwen"),
                                              ("toolCallParser", "")])
def test_unknown_parser_refused_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as e:
        cr("hf://Qwen/Qwen3-0.6B", {field: value})
    text = str(e.value)
    assert field in text  # the spec's (camelCase) field name
    assert "none" in text  # the message says how to turn it off


def test_catalog_names_are_vllm_names() -> None:
    for m in list_models():
        assert m.tool_call_parser is None or m.tool_call_parser in VLLM_TOOL_CALL_PARSERS, m.id
        assert m.reasoning_parser is None or m.reasoning_parser in VLLM_REASONING_PARSERS, m.id
    assert NONE not in VLLM_TOOL_CALL_PARSERS and NONE not in VLLM_REASONING_PARSERS


# -- vLLM's own registries and validators (the vLLM venv) -------------------------------------

@pytest.fixture(scope="module")
def vllm_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists() or not list(VENV.glob(".complete-*")):
        pytest.skip(f"vLLM {VLLM_VERSION} venv not found at {VENV}: vLLM pins torch 2.14 and cannot share "
                    "the main .venv; create it with tests/engines/vllm_env.sh (~3.5 min, ~7 GB, once)")
    return python


def _check(python: Path, cases: list[list[str]]) -> dict:
    out = subprocess.run([str(python), str(HERE / "vllm_tool_parser_check.py")],
                         input=json.dumps({"cases": cases}), capture_output=True, text=True, timeout=300,
                         check=True, env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_rendered_parsers_are_vllms_own(vllm_python: Path) -> None:
    cases, expected = [], []
    for m in list_models():
        cases.append(serve_args(cr(f"hf://{m.id}")))
        expected.append((m.tool_call_parser, m.reasoning_parser or None))
    cases.append(serve_args(cr("hf://Qwen/Qwen3-0.6B", {"toolCallParser": "qwen3_xml", "reasoningParser": NONE})))
    expected.append(("qwen3_xml", None))
    # vLLM's validators really refuse: an unregistered parser name, and auto tool choice without one.
    bad = ["/m", "--enable-auto-tool-choice", "--tool-call-parser", "not_a_parser"]
    report = _check(vllm_python, [*cases, bad, ["/m", "--enable-auto-tool-choice"],
                                  ["/m", "--reasoning-parser", "not_a_parser"]])
    assert report["vllm_version"] == VLLM_VERSION
    # The operator's lists are vLLM's registries: admission accepts exactly what vLLM would.
    assert tuple(report["tool_call_parsers"]) == tuple(sorted(VLLM_TOOL_CALL_PARSERS))
    assert tuple(report["reasoning_parsers"]) == tuple(sorted(VLLM_REASONING_PARSERS))
    *results, bad_tool, no_parser, bad_reasoning = report["results"]
    for case, result, (tool, reasoning) in zip(cases, results, expected, strict=True):
        assert result["ok"], (case, result)
        assert result["tool_call_parser"] == tool and result["enable_auto_tool_choice"] is (tool is not None)
        assert (result["reasoning_parser"] or None) == reasoning
    assert not bad_tool["ok"] and "invalid tool call parser" in bad_tool["error"]
    assert not no_parser["ok"] and "requires --tool-call-parser" in no_parser["error"]
    assert not bad_reasoning["ok"] and "invalid reasoning parser" in bad_reasoning["error"]
