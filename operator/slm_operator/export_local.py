"""Export a finished ONNX artifact into Foundry Local's model cache layout (`slmctl export --foundry-local`).

Foundry Local finds cached models by scanning its cache folder (the `ModelCacheDir` setting;
`foundry cache cd` on the CLI): each top-level folder is a publisher, and below it any folder
that holds genai_config.json and inference_model.json, and no download.tmp, is one model
(Foundry Local's local_model_scanner.cc). inference_model.json's "Name" is the model id; the
scanner appends ":0" when it has no ":version". "PromptTemplate" (system/user/assistant/prompt,
each with a {Content} placeholder) is optional; it is rendered here from the model's chat
template when jinja2 is installed.

So the export writes

    <cache>/<publisher>/<name>/      the artifact's files (model.onnx, model.onnx.data,
                                     genai_config.json, tokenizer files, manifest.json)
                                     + inference_model.json

checking every file against the artifact's manifest.json (size and sha256) first. The copy
is made with download.tmp present (Foundry Local skips such a folder) and renamed into
place, so a half-written export is never picked up. A rerun for the same artifact (same
manifest sha256) does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
INFERENCE_MODEL = "inference_model.json"
DOWNLOAD_MARKER = "download.tmp"  # Foundry Local skips a folder holding it (download in progress)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ExportError(RuntimeError):
    """The artifact cannot be exported: not an ONNX artifact, damaged, or a bad name."""


@dataclass(frozen=True)
class Exported:
    """Where the export went, the model id Foundry Local will list, and whether it was already there."""

    path: Path
    model_id: str
    manifest_sha256: str
    already: bool


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_artifact(artifact: Path) -> dict[str, Any]:
    """The artifact's manifest after checking it is a complete ONNX artifact whose files match
    the manifest (size, sha256). Raises ExportError saying what is wrong and what to do."""
    try:
        manifest = json.loads((artifact / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{artifact}: no readable {MANIFEST}; point --artifact at a finished quantizer "
                          f"artifact folder (/models/<name>-<key> on the model volume)") from e
    if manifest.get("complete") is not True or not isinstance(manifest.get("files"), list):
        raise ExportError(f"{artifact}: the artifact is not complete (its manifest says so); wait for the "
                          "quantization Job to finish")
    if manifest.get("format") != "onnx":
        raise ExportError(f"{artifact}: Foundry Local runs ONNX (onnxruntime-genai) models, this artifact is "
                          f"format {manifest.get('format')!r}; quantize with format onnx to export it")
    problems = []
    for entry in manifest["files"]:
        path = artifact / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']} missing")
        elif path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
            problems.append(f"{entry['path']} does not match the manifest")
    if problems:
        raise ExportError(f"{artifact}: damaged artifact ({'; '.join(problems)}); rerun the quantization")
    if not (artifact / "genai_config.json").is_file():
        raise ExportError(f"{artifact}: no genai_config.json, which Foundry Local needs to load the model")
    return manifest


def _chat_template(artifact: Path) -> str | None:
    jinja = artifact / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    try:
        value = json.loads((artifact / "tokenizer_config.json").read_text()).get("chat_template")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None


def prompt_template(artifact: Path) -> dict[str, str] | None:
    """Foundry Local's PromptTemplate (system, user, assistant, prompt with {Content}) rendered
    from the artifact's chat template; None without jinja2 or a template, or when it fails."""
    template = _chat_template(artifact)
    if template is None:
        return None
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None
    try:
        tpl = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)

        def one(role: str, generation: bool = False) -> str:
            return tpl.render(messages=[{"role": role, "content": "{Content}"}],
                              add_generation_prompt=generation, bos_token="", eos_token="").strip("\n")

        user = one("user")
        prompt = one("user", generation=True)
        return {"system": one("system"), "user": user, "assistant": one("assistant"), "prompt": prompt}
    except Exception:  # a template needing more context than a single message: leave it to the runtime
        return None


def export_foundry_local(artifact: Path, cache_dir: Path, name: str, *, publisher: str = "slm-operator",
                         version: int = 1) -> Exported:
    """Copy a checked ONNX artifact to cache_dir/publisher/name with inference_model.json.

    The model id is "<name>:<version>". Raises ExportError for a bad name or artifact, or when
    cache_dir/publisher/name holds something that is not an earlier export of this tool.
    """
    for label, value in (("--name", name), ("--publisher", publisher)):
        if not NAME_PATTERN.match(value):
            raise ExportError(f"{label} {value!r} must be 1-128 letters, digits, '.', '_' or '-', starting "
                              "with a letter or digit (it becomes a folder name)")
    if version < 0:
        raise ExportError("--version must be 0 or more")
    manifest = check_artifact(artifact)
    manifest_sha = _sha256(artifact / MANIFEST)
    model_id = f"{name}:{version}"
    parent = cache_dir / publisher
    dest = parent / name
    if dest.exists():
        try:
            info = json.loads((dest / INFERENCE_MODEL).read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("Name") == model_id and (dest / MANIFEST).is_file() and \
                _sha256(dest / MANIFEST) == manifest_sha and not (dest / DOWNLOAD_MARKER).exists():
            return Exported(dest, model_id, manifest_sha, already=True)
        if (info.get("SlmOperator") or {}).get("exportedBy") != "slmctl export":
            raise ExportError(f"{dest} exists and was not written by slmctl export; choose another --name or "
                              "remove it")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.export-", dir=parent))
    try:
        (tmp / DOWNLOAD_MARKER).write_text("")
        for entry in [*manifest["files"], {"path": MANIFEST}]:
            target = tmp / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(artifact / entry["path"], target)
        info: dict[str, Any] = {"Name": model_id}
        template = prompt_template(artifact)
        if template:
            info["PromptTemplate"] = template
        info["SlmOperator"] = {"exportedBy": "slmctl export", "manifestSha256": manifest_sha,
                               "format": manifest.get("format"), "type": manifest.get("type"),
                               "source": manifest.get("source"), "perplexity": manifest.get("perplexity")}
        (tmp / INFERENCE_MODEL).write_text(json.dumps(info, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        if dest.exists():
            old = parent / f".{name}.replaced"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, dest)
        (dest / DOWNLOAD_MARKER).unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(dest, model_id, manifest_sha, already=False)
