# ruff: noqa: E501  (Go templates are kept line for line as Ollama ships them)
"""Chat template (Jinja, from the model) -> Ollama Go TEMPLATE that keeps the model's capabilities.

A general Jinja-to-Go translation does not exist; chat templates come in a few families, told
apart by their special tokens. Within a family the source template also says what the model was
trained for: tool calling (the Jinja reads a `tools` variable) and thinking (`<think>` blocks).
The Go template chosen here carries each of those the family's Go form can express, because
Ollama (v0.13.5, server/images.go Model.Capabilities) decides from the TEMPLATE alone:
  * "tools"    when the template references `.Tools` (Template.Vars contains "tools");
  * "thinking" when thinking.InferTags finds the text around `.Thinking` inside `range .Messages`.
A request with `tools` to a model without the "tools" capability is refused ("does not support
tools"), so a template that leaves `.Tools` out silently turns tool calling off.

The Go templates are Ollama's own where Ollama has one: the template library of the Go module
(template/*.gotmpl: chatml, phi-3, gemma-instruct, llama3-instruct, mistral-instruct), and for the
tool-calling forms the templates of Ollama's published models for the same families (qwen3 /
qwen2.5, llama3.2, phi4-mini, mistral), which the module's own tests quote (thinking/
template_test.go "qwen3"). Each was checked against the model's Hugging Face chat template: same
special tokens, same place for the system prompt, the tool list and the tool call/response.

What the family's Go form cannot carry is reported in `TemplateChoice.dropped`, never dropped in
silence (the importer logs it; see README "Capabilities").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# ---- ChatML (Qwen2.5 / Qwen3 / SmolLM / ...): Ollama template/chatml.gotmpl, tools and thinking
# from Ollama's qwen3 model template (quoted in the Go module's thinking/template_test.go).
_CHATML_PLAIN = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)
_QWEN_TOOLS = """{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}"""
# Thinking as Qwen3's own template: the reasoning of assistant turns after the last user turn is
# kept, and an empty <think></think> opens the answer when the request turns thinking off
# (Qwen3's enable_thinking=false).
_QWEN_LAST_USER = """{{- $lastUserIdx := -1 }}
{{- range $idx, $msg := .Messages }}{{ if eq $msg.Role "user" }}{{ $lastUserIdx = $idx }}{{ end }}{{ end }}
"""
_QWEN_ASSISTANT_THINK = """{{ if and $.IsThinkSet .Thinking (or $last (gt $i $lastUserIdx)) }}<think>{{ .Thinking }}</think>
{{ end }}"""
_QWEN_PROMPT_NO_THINK = """{{ if and $.IsThinkSet (not $.Think) }}<think>

</think>

{{ end }}"""
_QWEN_TOOL_CALLS = """
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>"""
_QWEN_TOOL_RESPONSE = """
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}"""


def _qwen(tools: bool, think: bool) -> str:
    """Ollama's qwen3 (tools + think) / qwen2.5 (tools) template; parts left out when the model lacks them."""
    return "".join([
        _QWEN_LAST_USER if think else "",
        "{{- if or .System .Tools }}" if tools else "{{- if .System }}",
        "<|im_start|>system\n{{- if .System }}\n{{ .System }}\n{{- end }}",
        _QWEN_TOOLS if tools else "",
        "<|im_end|>\n{{ end }}\n",
        "{{- range $i, $_ := .Messages }}\n{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n",
        "{{- if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n{{ else if eq .Role \"assistant\" }}<|im_start|>assistant\n",
        _QWEN_ASSISTANT_THINK if think else "",
        "{{ if .Content }}{{ .Content }}",
        _QWEN_TOOL_CALLS if tools else "",
        "\n{{- end }}{{ if not $last }}<|im_end|>\n{{ end }}",
        _QWEN_TOOL_RESPONSE if tools else "\n{{- end }}",
        "\n{{- if and (ne .Role \"assistant\") $last }}<|im_start|>assistant\n",
        _QWEN_PROMPT_NO_THINK if think else "",
        "{{ end }}\n{{- end }}",
    ])


# ---- Phi-4 (ChatML tokens with <|im_sep|> after the role); no tools in its template.
_PHI4 = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}<|im_end|>{{ end }}"
    "<|im_start|>assistant<|im_sep|>"
)

# ---- Phi-3 / Phi-3.5: Ollama template/phi-3.gotmpl. Phi-4-mini (same tokens, tools in the system
# turn between <|tool|> and <|/tool|>, calls between <|tool_call|> and <|/tool_call|>): Ollama's
# phi4-mini template.
_PHI3_PLAIN = "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n"
_PHI4_MINI_TOOLS = """{{- if or .System .Tools }}<|system|>{{ if .System }}{{ .System }}{{ else }}You are a helpful assistant with some tools.{{ end }}
{{- if .Tools }}<|tool|>[{{ range $j, $t := .Tools }}{{ if $j }}, {{ end }}{{ $t.Function }}{{ end }}]<|/tool|>{{ end }}<|end|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "assistant" }}<|assistant|>
{{- if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<|tool_call|>[{{ range $j, $c := .ToolCalls }}{{ if $j }}, {{ end }}{"name": "{{ $c.Function.Name }}", "arguments": {{ $c.Function.Arguments }}}{{ end }}]<|/tool_call|>
{{- end }}{{ if not $last }}<|end|>{{ end }}
{{- else if ne .Role "system" }}<|{{ .Role }}|>{{ .Content }}<|end|>
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|assistant|>{{ end }}
{{- end }}"""

# ---- Gemma 2 / 3: Ollama template/gemma-instruct.gotmpl. Gemma has no system role; its own
# template puts the system prompt, then a blank line, at the head of the first user turn, and so
# does this one (Ollama's puts one newline).
_GEMMA = """{{- $system := "" }}
{{- range .Messages }}
{{- if eq .Role "system" }}
{{- if not $system }}{{ $system = .Content }}
{{- else }}{{ $system = printf "%s\\n\\n%s" $system .Content }}
{{- end }}
{{- else if eq .Role "user" }}<start_of_turn>user
{{ if $system }}{{ $system }}

{{ $system = "" }}{{ end }}{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
"""

# ---- Llama 3.x: Ollama template/llama3-instruct.gotmpl; with tools (Llama 3.1+) Ollama's llama3.2
# template with Meta's system header (Environment: ipython, knowledge cutoff, today's date: Ollama's
# currentDate, YYYY-MM-DD) and the tool list in the first user turn as Meta's template puts it
# (Ollama's: the last one); calls as {"name": ..., "parameters": ...}, results in the ipython role.
_LLAMA3_PLAIN = (
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
    "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_LLAMA3_TOOLS = """<|start_header_id|>system<|end_header_id|>

{{ if .Tools }}Environment: ipython
{{ end }}Cutting Knowledge Date: December 2023
Today Date: {{ currentDate }}

{{ if .System }}{{ .System }}{{ end }}<|eot_id|>
{{- $firstUserIdx := -1 }}
{{- range $idx, $msg := .Messages }}{{ if and (eq $msg.Role "user") (lt $firstUserIdx 0) }}{{ $firstUserIdx = $idx }}{{ end }}{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools (eq $i $firstUserIdx) }}

Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.

{{ range $.Tools }}
{{- . }}
{{ end }}
{{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

# ---- Mistral: Ollama template/mistral-instruct.gotmpl; with tools Ollama's mistral template
# ([AVAILABLE_TOOLS] and the system prompt before the last user turn, as Mistral v0.3's own
# template; Ollama's keys on the last message, which drops both once a tool result follows),
# [TOOL_CALLS] and [TOOL_RESULTS] as Mistral's own.
_MISTRAL_PLAIN = """[INST] {{ range $index, $_ := .Messages }}
{{- if eq .Role "system" }}{{ .Content }}

{{ else if eq .Role "user" }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}</s>[INST] {{ end }}
{{- end }}"""
_MISTRAL_TOOLS = """{{- $lastUserIdx := -1 }}
{{- range $idx, $msg := .Messages }}{{ if eq $msg.Role "user" }}{{ $lastUserIdx = $idx }}{{ end }}{{ end }}
{{- range $index, $_ := .Messages }}
{{- if eq .Role "user" }}
{{- if and $.Tools (eq $index $lastUserIdx) }}[AVAILABLE_TOOLS] {{ $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ if and $.System (eq $index $lastUserIdx) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}
{{- else if .ToolCalls }}[TOOL_CALLS] [
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{- end }}]
{{- end }}</s>
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ .Content }}} [/TOOL_RESULTS]
{{- end }}
{{- end }}"""

# Mistral v0.1-v0.3 put a space after [INST] and before the answer; the Tekken templates (Nemo,
# Small) put none. The Go templates above are the spaced form.
_MISTRAL_UNSPACED = (("[INST] ", "[INST]"), ("[AVAILABLE_TOOLS] ", "[AVAILABLE_TOOLS]"),
                     ("[TOOL_CALLS] [", "[TOOL_CALLS]["), ("[TOOL_RESULTS] ", "[TOOL_RESULTS]"),
                     (" [/TOOL_RESULTS]", "[/TOOL_RESULTS]"), (" {{ .Content }}", "{{ .Content }}"))


def _mistral(template: str, *, spaced: bool) -> str:
    if spaced:
        return template
    for old, new in _MISTRAL_UNSPACED:
        template = template.replace(old, new)
    return template


TOOLS = "tools"
THINKING = "thinking"


@dataclass(frozen=True)
class ChatFormat:
    """One Go TEMPLATE: `family` (chatml, phi4, phi3, gemma, llama3, mistral), the Go text/template
    in Ollama's .Messages form, the stop strings, and the capabilities Ollama will see in it."""

    family: str
    template: str
    stops: tuple[str, ...]
    capabilities: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Family:
    """A template family: the special tokens that identify it, its stops, and what its Go form can carry."""

    name: str
    markers: tuple[str, ...]
    stops: tuple[str, ...]
    supports: frozenset[str]

    def build(self, caps: frozenset[str], jinja: str = "") -> ChatFormat:
        """The Go template for source template `jinja` with capabilities `caps` (only those supported)."""
        keep = caps & self.supports
        tools, think = TOOLS in keep, THINKING in keep
        template = {
            "chatml": lambda: _qwen(tools, think) if (tools or think) else _CHATML_PLAIN,
            "phi4": lambda: _PHI4,
            "phi3": lambda: _PHI4_MINI_TOOLS if tools else _PHI3_PLAIN,
            "gemma": lambda: _GEMMA,
            "llama3": lambda: _LLAMA3_TOOLS if tools else _LLAMA3_PLAIN,
            "mistral": lambda: _mistral(_MISTRAL_TOOLS if tools else _MISTRAL_PLAIN, spaced="[INST] " in jinja),
        }[self.name]()
        return ChatFormat(self.name, template, self.stops, frozenset(keep))


# Order matters: the first family whose markers all appear wins (Phi-4's <|im_sep|> before ChatML).
FAMILIES: tuple[Family, ...] = (
    Family("phi4", ("<|im_start|>", "<|im_sep|>", "<|im_end|>"), ("<|im_start|>", "<|im_end|>", "<|im_sep|>"),
           frozenset()),
    Family("chatml", ("<|im_start|>", "<|im_end|>"), ("<|im_start|>", "<|im_end|>"), frozenset({TOOLS, THINKING})),
    Family("gemma", ("<start_of_turn>", "<end_of_turn>"), ("<end_of_turn>", "<start_of_turn>"), frozenset()),
    Family("llama3", ("<|start_header_id|>", "<|eot_id|>"), ("<|eot_id|>", "<|start_header_id|>"),
           frozenset({TOOLS})),
    # Phi-4-mini builds the role tags ('<|' + role + '|>'): only the generation prompt is literal.
    Family("phi3", ("<|assistant|>", "<|end|>"), ("<|end|>", "<|user|>", "<|endoftext|>"), frozenset({TOOLS})),
    Family("mistral", ("[INST]", "[/INST]"), ("[INST]", "[/INST]", "</s>"), frozenset({TOOLS})),
)

# Jinja statements and expressions: capabilities are read from code, not from prose in the text.
_JINJA_CODE = re.compile(r"\{[{%](.*?)[%}]\}", re.S)
_TOOLS_VAR = re.compile(r"\btools\b")  # the variable transformers' apply_chat_template(tools=...) sets


def source_capabilities(jinja_template: str) -> frozenset[str]:
    """What the model's own chat template supports: "tools" when its Jinja code reads a `tools`
    variable (Qwen2.5/3, Llama 3.1+, Phi-4-mini, Mistral v0.3+ all do), "thinking" when it writes
    <think> blocks (Qwen3, QwQ, DeepSeek-R1 distills)."""
    code = " ".join(_JINJA_CODE.findall(jinja_template))
    caps = set()
    if _TOOLS_VAR.search(code) or "[AVAILABLE_TOOLS]" in jinja_template:
        caps.add(TOOLS)
    if "<think>" in jinja_template:
        caps.add(THINKING)
    return frozenset(caps)


@dataclass(frozen=True)
class TemplateChoice:
    """The outcome for one source template: `format` (None: no family known, no TEMPLATE written),
    `source` (capabilities of the model's template) and `dropped` (those the written template,
    or Ollama's fallback when none is written, does not carry)."""

    format: ChatFormat | None
    source: frozenset[str]
    dropped: frozenset[str]


def choose_template(jinja_template: str | None) -> TemplateChoice:
    """Pick the family's Go template keeping every capability of the source it can express."""
    if not jinja_template:
        return TemplateChoice(None, frozenset(), frozenset())
    caps = source_capabilities(jinja_template)
    for family in FAMILIES:
        if all(m in jinja_template for m in family.markers):
            fmt = family.build(caps, jinja_template)
            return TemplateChoice(fmt, caps, caps - fmt.capabilities)
    # No TEMPLATE: Ollama matches the GGUF's chat template against its template library
    # (server/model.go detectChatTemplate), and none of those templates has .Tools or .Thinking.
    return TemplateChoice(None, caps, caps)


def detect_chat_format(jinja_template: str | None) -> ChatFormat | None:
    """The Go template for a chat template, or None when its family is not known."""
    return choose_template(jinja_template).format
