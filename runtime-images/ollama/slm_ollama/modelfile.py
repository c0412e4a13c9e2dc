"""Pure pieces of the import: where the chat template comes from, parameters, Modelfile text.

The chat template (Jinja) is read from the model folder's tokenizer_config.json /
chat_template.jinja or, for a bare GGUF artifact, from the GGUF's own `tokenizer.chat_template`
metadata; slm_ollama.templates turns it into Ollama's Go TEMPLATE, keeping tools and thinking.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from slm_ollama.templates import detect_chat_format  # noqa: F401  (re-exported: the importer's API)

# Ollama's PARAMETER names this importer accepts, with their value types.
PARAMS: dict[str, type] = {
    "num_ctx": int, "num_predict": int, "num_batch": int, "num_gpu": int, "num_thread": int, "num_keep": int,
    "repeat_last_n": int, "seed": int, "top_k": int,
    "temperature": float, "top_p": float, "min_p": float, "typical_p": float, "repeat_penalty": float,
    "presence_penalty": float, "frequency_penalty": float,
    "stop": str,
}


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


# GGUF metadata value types (gguf-py GGUFValueType; GGUF v2/v3 spec): fixed-size scalars by struct code.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _GGUFReader:
    """Sequential little-endian reader of a GGUF header's key/value section (no tensors read)."""

    def __init__(self, fh) -> None:
        self.fh = fh

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF metadata")
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        n = self.take("Q")
        data = self.fh.read(n)
        if len(data) != n:
            raise ValueError("truncated GGUF metadata")
        return data.decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool):
        if vtype in _GGUF_SCALARS:
            return self.take(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            return self.string()
        if vtype == _GGUF_ARRAY:
            etype, n = self.take("I"), self.take("Q")
            if etype in _GGUF_SCALARS and not keep:  # skip without decoding (token scores, types, merges' ids)
                self.fh.seek(n * struct.calcsize("<" + _GGUF_SCALARS[etype]), 1)
                return None
            items = [self.value(etype, keep) for _ in range(n)]
            return items if keep else None
        raise ValueError(f"unknown GGUF metadata type {vtype}")


def read_gguf_chat_template(gguf: Path) -> tuple[str | None, str | None]:
    """(tokenizer.chat_template, eos token text) from a GGUF file's metadata; None for what is absent.

    The converter (llama.cpp convert_hf_to_gguf.py) copies the Hugging Face chat template into the
    GGUF, so a bare GGUF artifact still says how the model chats and whether it takes tools.
    Raises ValueError when the file is not a little-endian GGUF v2/v3.
    """
    with gguf.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError(f"{gguf}: not a GGUF file (magic bytes differ)")
        r = _GGUFReader(fh)
        version = r.take("I")
        if version not in (2, 3):
            raise ValueError(f"{gguf}: GGUF version {version} not supported (2 or 3; big-endian files are not)")
        r.take("Q")  # tensor count
        template: str | None = None
        tokens: list[str] | None = None
        eos_id: int | None = None
        for _ in range(r.take("Q")):
            key, vtype = r.string(), r.take("I")
            value = r.value(vtype, keep=key == "tokenizer.ggml.tokens")
            if key == "tokenizer.chat_template" and isinstance(value, str):
                template = value
            elif key == "tokenizer.ggml.tokens":
                tokens = value
            elif key == "tokenizer.ggml.eos_token_id" and isinstance(value, int):
                eos_id = value
    eos = tokens[eos_id] if tokens is not None and eos_id is not None and 0 <= eos_id < len(tokens) else None
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
