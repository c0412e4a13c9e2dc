"""Chat prompt rendering with the model's own template.

The template comes from the tokenizer files the builder copied next to the model
(chat_template.jinja, or tokenizer_config.json's chat_template). onnxruntime-genai's
Tokenizer.apply_chat_template renders it natively; a sandboxed Jinja2 environment (the
way transformers renders templates) is the fallback for templates it cannot handle.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger(__name__)

# Used when a model ships no template at all (base models): plain role-prefixed turns.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def find_template(model_dir: Path) -> tuple[str, dict[str, Any]]:
    """Return (template, special tokens) from the model folder's tokenizer files."""
    config: dict[str, Any] = {}
    cfg_path = model_dir / "tokenizer_config.json"
    if cfg_path.is_file():
        config = json.loads(cfg_path.read_text())
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: pick "default"
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    jinja_file = model_dir / "chat_template.jinja"
    if not template and jinja_file.is_file():
        template = jinja_file.read_text()
    specials = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token")}
    return template or FALLBACK_TEMPLATE, specials


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return str(value or "")


class ChatTemplate:
    def __init__(self, model_dir: Path, tokenizer: Any | None) -> None:
        self.template, self._specials = find_template(model_dir)
        self._tokenizer = tokenizer
        self._use_native = tokenizer is not None and hasattr(tokenizer, "apply_chat_template")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
        self._jinja = env.from_string(self.template)

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True, **kwargs: Any) -> str:
        """The prompt text for ``messages``.

        tools (OpenAI tool objects), tool_calls in earlier messages and extra template variables
        (chat_template_kwargs) go through Jinja2, which passes them as transformers does; plain
        messages use onnxruntime-genai's native renderer.
        """
        plain = not tools and not kwargs and not any("tool_calls" in m for m in messages)
        if not plain:
            return self._jinja.render(**{**kwargs, "messages": messages, "tools": tools,
                                         "add_generation_prompt": add_generation_prompt, **self._specials})
        if not add_generation_prompt:
            return self._jinja.render(messages=messages, add_generation_prompt=False, **self._specials)
        if self._use_native:
            try:
                return self._tokenizer.apply_chat_template(
                    json.dumps(messages), template_str=self.template, add_generation_prompt=True
                )
            except Exception as exc:
                # Either a construct the native renderer lacks or the template rejecting the
                # messages: Jinja2 decides, and takes over for good only if it succeeds.
                text = self._render_jinja(messages)
                log.warning("native chat template failed; using jinja2", extra={"error": type(exc).__name__})
                self._use_native = False
                return text
        return self._render_jinja(messages)

    def _render_jinja(self, messages: list[dict[str, str]]) -> str:
        return self._jinja.render(messages=messages, add_generation_prompt=True, **self._specials)


def _raise(message: str) -> None:
    raise ValueError(message)
