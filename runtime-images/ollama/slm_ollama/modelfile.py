"""Pure pieces of the import: chat template (Jinja) -> Ollama Go template, parameters, Modelfile text.

A general Jinja-to-Go translation does not exist; chat templates come in a few families, told
apart by their special tokens. A known family gets Ollama's Go template for it; an unknown one
gets no TEMPLATE line, and Ollama falls back to the chat template embedded in the GGUF
(tokenizer.chat_template), which it matches against its own template library.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChatFormat:
    family: str
    template: str  # Go text/template, Ollama's .Messages form
    stops: tuple[str, ...]


CHATML = ChatFormat(
    "chatml",
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
    ("<|im_start|>", "<|im_end|>"),
)
PHI3 = ChatFormat(
    "phi3",
    "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n",
    ("<|end|>", "<|user|>", "<|endoftext|>"),
)
# Gemma has no system role: its own template folds the system prompt into the first user turn.
GEMMA = ChatFormat(
    "gemma",
    "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}user{{ end }}\n"
    "{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n",
    ("<end_of_turn>",),
)
LLAMA3 = ChatFormat(
    "llama3",
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
    "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("<|eot_id|>", "<|start_header_id|>"),
)
# Order matters: the first family whose markers all appear wins.
FAMILIES: tuple[tuple[tuple[str, ...], ChatFormat], ...] = (
    (("<|im_start|>", "<|im_end|>"), CHATML),
    (("<start_of_turn>", "<end_of_turn>"), GEMMA),
    (("<|start_header_id|>", "<|eot_id|>"), LLAMA3),
    (("<|user|>", "<|end|>"), PHI3),
)

# Ollama's PARAMETER names this importer accepts, with their value types.
PARAMS: dict[str, type] = {
    "num_ctx": int, "num_predict": int, "num_batch": int, "num_gpu": int, "num_thread": int, "num_keep": int,
    "repeat_last_n": int, "seed": int, "top_k": int,
    "temperature": float, "top_p": float, "min_p": float, "typical_p": float, "repeat_penalty": float,
    "presence_penalty": float, "frequency_penalty": float,
    "stop": str,
}


def detect_chat_format(jinja_template: str | None) -> ChatFormat | None:
    if not jinja_template:
        return None
    for markers, fmt in FAMILIES:
        if all(m in jinja_template for m in markers):
            return fmt
    return None


def _token_text(tok: object) -> str | None:
    if isinstance(tok, str):
        return tok
    if isinstance(tok, dict) and isinstance(tok.get("content"), str):
        return tok["content"]
    return None


def read_tokenizer_config(model_dir: Path) -> tuple[str | None, str | None]:
    """(chat_template, eos token) from a Hugging Face model folder; (None, None) when absent."""
    config_path = model_dir / "tokenizer_config.json"
    template = None
    eos = None
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        raw = config.get("chat_template")
        if isinstance(raw, list):  # named templates: [{"name": "default", "template": "..."}]
            raw = next((t.get("template") for t in raw if t.get("name") == "default"), None)
        template = raw if isinstance(raw, str) else None
        eos = _token_text(config.get("eos_token"))
    jinja = model_dir / "chat_template.jinja"  # transformers >= 4.43 may keep it in its own file
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    return template, eos


def parse_params(items: list[str]) -> list[tuple[str, str]]:
    """`name=value` strings -> validated (name, value) pairs, in order (stop may repeat)."""
    out: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in PARAMS:
            raise ValueError(f"parameter {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(PARAMS))}")
        kind = PARAMS[name]
        if kind is not str:
            try:
                kind(value)
            except ValueError:
                raise ValueError(f"parameter {name}: {value!r} is not a valid {kind.__name__}") from None
        elif not value or "\n" in value:
            raise ValueError(f"parameter {name}: value must be one non-empty line")
        out.append((name, value))
    return out


def _quote(text: str) -> str:
    # Modelfile strings: triple quotes hold newlines; the template never contains them.
    if '"""' in text:
        raise ValueError('a TEMPLATE may not contain """')
    return f'"""{text}"""'


def build_modelfile(gguf: str, *, template: str | None, stops: list[str], params: list[tuple[str, str]]) -> str:
    """Modelfile text: FROM, TEMPLATE (if any), then PARAMETER lines (stops first, deduplicated)."""
    lines = [f"FROM {gguf}"]
    if template:
        lines.append(f"TEMPLATE {_quote(template)}")
    seen: set[str] = set()
    for stop in [*stops, *(v for k, v in params if k == "stop")]:
        if stop not in seen:
            seen.add(stop)
            lines.append(f"PARAMETER stop {json.dumps(stop)}")
    lines += [f"PARAMETER {k} {v}" for k, v in params if k != "stop"]
    return "\n".join(lines) + "\n"


def create_request(name: str, files: dict[str, str], *, template: str | None, stops: list[str],
                   params: list[tuple[str, str]]) -> dict:
    """The /api/create body equivalent to the Modelfile (Ollama >= 0.5.5 takes fields, not text)."""
    parameters: dict[str, object] = {}
    stop_list: list[str] = []
    for stop in [*stops, *(v for k, v in params if k == "stop")]:
        if stop not in stop_list:
            stop_list.append(stop)
    if stop_list:
        parameters["stop"] = stop_list
    for k, v in params:
        if k != "stop":
            parameters[k] = PARAMS[k](v)
    body: dict[str, object] = {"model": name, "files": files, "stream": False}
    if template:
        body["template"] = template
    if parameters:
        body["parameters"] = parameters
    return body


_MODEL_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,79}(:[a-zA-Z0-9._-]{1,80})?$")


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name):
        raise ValueError(f"model name {name!r} must match {_MODEL_NAME.pattern}")
    return name
