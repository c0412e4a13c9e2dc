"""vLLM's tool-call and reasoning parsers: which `vllm serve` flags let a model's own chat
template use `tools` (and split out its reasoning).

Without --enable-auto-tool-choice and --tool-call-parser, vLLM refuses a chat request with
`tools` and `tool_choice: "auto"`; without --reasoning-parser, a reasoning model's <think>
text lands in `content`. The parser for each catalog model is catalog data
(data/models.yaml: tool_call_parser, reasoning_parser); spec.engine.vllm.toolCallParser /
reasoningParser override it, and "none" turns it off.

The name lists are vLLM 0.33.0's own registries (ToolParserManager.list_registered(),
ReasoningParserManager.list_registered()); tests/engines/test_vllm_tool_parsers.py checks them
against the pinned vLLM, so a version bump that renames one fails there.
No module-level imports beyond typing: api.py imports this module for its enums.
"""

from __future__ import annotations

from typing import Any

NONE = "none"  # spec value: no parser, even where the catalog names one

VLLM_TOOL_CALL_PARSERS = (
    "apertus", "beam", "cohere_command3", "cohere_command4", "deepseek_v3", "deepseek_v31",
    "deepseek_v32", "deepseek_v4", "deepseek_v41", "dots", "ernie45", "functiongemma", "gemma4",
    "gigachat3", "glm45", "glm47", "granite", "granite-20b-fc", "granite4", "hermes", "hf",
    "hunyuan_a13b", "hy_v3", "hy_v4", "inkling", "internlm", "jamba", "k2_horizon", "kimi_k2",
    "kimi_k3", "lfm2", "ling3", "llama3_json", "llama4_json", "llama4_pythonic", "longcat", "mimo",
    "minicpm5", "minimax_m2", "minimax_m3", "mistral", "muse", "muse_glimmer", "musespark1x",
    "olmo3", "openai", "phi4_mini_json", "plamo3", "poolside_v1", "pythonic", "qwen3_coder",
    "qwen3_json", "qwen3_xml", "seed_oss", "step3", "step3p5", "step5", "xlam",
)
VLLM_REASONING_PARSERS = (
    "beam", "cohere_command3", "cohere_command4", "deepseek_r1", "deepseek_v3", "deepseek_v4",
    "deepseek_v41", "ernie45", "gemma4", "glm45", "glm47", "granite", "granite_thinking_parser", "hf",
    "holo2", "hunyuan_a13b", "hy_v3", "hy_v4", "inkling", "k2_horizon", "kimi_k2", "kimi_k3", "ling3",
    "mimo", "minicpmv", "minimax_m2", "minimax_m2_append_think", "minimax_m3", "mistral", "muse",
    "muse_glimmer", "musespark1x", "nemotron_v3", "olmo3", "openai_gptoss", "plamo3", "poolside_v1",
    "qwen3", "seed_oss", "step3", "step3p5", "step5",
)


def _pick(override: str | None, catalog: str | None) -> str | None:
    if override is not None:
        return None if override == NONE else override
    return catalog


def parser_flags(facts: Any, options: Any) -> list[str]:
    """`vllm serve` flags for tool calling and reasoning: [] or e.g.
    ["--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--reasoning-parser", "qwen3"].

    facts: the catalog's ModelFacts (tool_call_parser / reasoning_parser) or None for a model the
    catalog does not know (then only the spec names parsers); options: spec.engine.vllm
    (VLLMOptions: tool_call_parser / reasoning_parser, None = the catalog's, "none" = off) or None.
    Raises ValueError for a name vLLM 0.33.0 does not register (admission refuses it first)."""
    tool = _pick(getattr(options, "tool_call_parser", None), getattr(facts, "tool_call_parser", None))
    reasoning = _pick(getattr(options, "reasoning_parser", None), getattr(facts, "reasoning_parser", None))
    if tool is not None and tool not in VLLM_TOOL_CALL_PARSERS:
        raise ValueError(f"engine.vllm.toolCallParser {tool!r} is not a vLLM tool-call parser; use one of "
                         f"{', '.join(VLLM_TOOL_CALL_PARSERS)}, or 'none'")
    if reasoning is not None and reasoning not in VLLM_REASONING_PARSERS:
        raise ValueError(f"engine.vllm.reasoningParser {reasoning!r} is not a vLLM reasoning parser; use one "
                         f"of {', '.join(VLLM_REASONING_PARSERS)}, or 'none'")
    flags = ["--enable-auto-tool-choice", "--tool-call-parser", tool] if tool else []
    if reasoning:
        flags += ["--reasoning-parser", reasoning]
    return flags
