"""Print the request fields of the pinned vLLM's OpenAI server as JSON; runs inside the vLLM venv.

The fields are the pydantic model fields of vLLM's ChatCompletionRequest (/v1/chat/completions)
and CompletionRequest (/v1/completions). The checked-in copy, vllm_request_fields.json, is what
test_onnx_server_fields.py holds the ONNX server to; test_vllm_request_fields.py proves the copy
equals what the pinned vLLM says. Regenerate after a vLLM bump (build the venv with
tests/engines/vllm_env.sh first):

  "$(tests/engines/vllm_env.sh | tail -1)/bin/python" tests/onnx_server/vllm_request_fields.py \
      > tests/onnx_server/vllm_request_fields.json
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# The PyPI wheel is a CUDA build; the protocol classes do not depend on the platform.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import vllm
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest


def _default(field: Any) -> Any:
    """The field's default as JSON; "<required>" when it has none, "<factory>" when it varies per request."""
    if field.is_required():
        return "<required>"
    if field.default_factory is not None:
        try:
            first, second = field.default_factory(), field.default_factory()
        except TypeError:  # factories that take the validated data
            return "<factory>"
        return first if first == second else "<factory>"  # e.g. a random request_id
    value = field.default
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


def fields(model: type) -> dict[str, Any]:
    """{field name: its default} for a pydantic request model, sorted by name."""
    return {name: _default(f) for name, f in sorted(model.model_fields.items())}


def main() -> None:
    out = {
        "vllm_version": vllm.__version__,
        "chat": fields(ChatCompletionRequest),
        "completion": fields(CompletionRequest),
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
