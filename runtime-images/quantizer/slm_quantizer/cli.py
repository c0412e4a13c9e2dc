"""python -m slm_quantizer: fetch -> convert/quantize -> verify (quality gate) -> atomic artifact.

`python -m slm_quantizer export ...` pushes a finished artifact to S3, a Hub repo or an OCI
registry (export.py).

Formats none and fp8 only fetch and verify (passthrough.py); the others convert and pass a
perplexity gate. Exit codes (EXIT_CODES; the operator's Job podFailurePolicy fails at once on
the permanent ones, PERMANENT_EXIT_CODES, and retries the rest):
  0 done (or already complete)
  1 unexpected failure (retried: the cause is not known)
  2 bad arguments or source: unreadable token or S3 credentials, a repo/revision/bucket that does
    not exist or may not be read, a broken model folder (permanent)
  3 quality gate failed (permanent)
  4 unsupported combination (permanent)
  5 source unavailable for now: network trouble, hub throttling or server errors, a checksum
    mismatch (the file is removed first) (retried)
  6 conversion failed: llama.cpp's converter or quantizer, the ONNX builder, Olive or mlx-lm
    refused this model (permanent: the same inputs fail the same way)
  7 the model-cache volume is full (permanent until the claim grows; diskspace.py): the summary
    adds bytesCapacity, bytesFree, sourceBytes and bytesNeeded
Every exit writes a JSON summary to --termination-log:
  {"result": "Succeeded|AlreadyComplete|GateFailed|Unsupported|SourceError|SourceUnavailable|
              ConversionFailed|DiskFull|Failed",
   "message": "...", "format", "type", "artifact", "perplexityBefore", "perplexityAfter",
   "increasePct", "gatePct", "totalBytes", "sourceBytes", "manifestSha256", "tool" (onnx)}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from slm_runtime import artifact, corpus, progress
from slm_runtime.perplexity import relative_increase_pct
from slm_runtime.secrets import SecretFileError, read_secret_file, redact

from . import diskspace, fetch

FORMAT_TYPES = {
    "none": ["bf16", "fp16"],  # fetch + verify only; the type is vLLM's --dtype
    "fp8": ["fp8"],  # fetch + verify only; vLLM quantizes at load (--quantization fp8)
    "gguf": ["Q8_0", "Q5_K_M", "Q4_K_M", "Q6_K", "Q4_0", "Q5_0", "TQ1_0", "TQ2_0"],  # TQ*: BitNet b1.58 only
    "onnx": ["int4", "int8", "fp16", "fp32"],
    "mlx": ["4bit", "8bit"],  # mlx-lm (mlx-cpu on Linux); export-only, no in-cluster engine
    "awq": ["w4a16"],
    "gptq": ["w4a16"],
}
# onnx tools: the builder alone, or Olive's GPTQ pass before it (see olive.py). The default
# is the one the builder-vs-Olive comparison picked (docs/quantization.md).
TOOLS = ("builder", "olive")
DEFAULT_ONNX_TOOL = "builder"
SAMPLE_PROMPT = "The baker opened"
PASSTHROUGH = ("none", "fp8")
EXIT_FAILED, EXIT_USAGE, EXIT_GATE, EXIT_UNSUPPORTED, EXIT_SOURCE_UNAVAILABLE, EXIT_CONVERSION = 1, 2, 3, 4, 5, 6
EXIT_DISK_FULL = 7
EXIT_CODES = {"Failed": EXIT_FAILED, "SourceError": EXIT_USAGE, "GateFailed": EXIT_GATE,
              "Unsupported": EXIT_UNSUPPORTED, "SourceUnavailable": EXIT_SOURCE_UNAVAILABLE,
              "ConversionFailed": EXIT_CONVERSION, "DiskFull": EXIT_DISK_FULL}
# A rerun with the same inputs cannot succeed: the Job fails at once (no re-download). A full
# volume is permanent for this Job: the operator reruns it once the claim has grown.
PERMANENT_EXIT_CODES = (EXIT_USAGE, EXIT_GATE, EXIT_UNSUPPORTED, EXIT_CONVERSION, EXIT_DISK_FULL)


class GateFailed(RuntimeError):
    pass


class Unsupported(RuntimeError):
    pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slm_quantizer", description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, help="hf://org/name, s3://bucket/prefix, pvc://claim/path, or a path")
    p.add_argument("--revision", default=None, help="hub revision to pin (commit sha recommended)")
    p.add_argument("--format", required=True, choices=sorted(FORMAT_TYPES))
    p.add_argument("--type", required=True, help="bf16|fp16 (none), fp8 (fp8), Q4_K_M|Q5_K_M|Q8_0 (gguf; "
                                                    "TQ1_0|TQ2_0 for BitNet b1.58), int4 (onnx), w4a16 (awq/gptq)")
    p.add_argument("--target", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--tool", default=None, choices=sorted(TOOLS),
                   help="onnx only: builder (onnxruntime-genai's builder, the default) or olive "
                        "(Olive's GPTQ pass, then the builder); int4 only for olive")
    p.add_argument("--output", required=True, type=Path, help="artifact folder, e.g. /models/<artifact>")
    p.add_argument("--max-ppl-increase-pct", type=float, default=5.0,
                   help="quality gate: fail when perplexity rises by more than this percent")
    p.add_argument("--token-file", default=None, help="file holding the hub token (a mounted Secret)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
    p.add_argument("--termination-log", default="/dev/termination-log")
    p.add_argument("--download-dir", type=Path, default=None,
                   help="hub download cache (default: <output parent>/.hf-cache, resumable across restarts)")
    p.add_argument("--pvc-root", type=Path, default=Path("/mnt/pvc"), help="where pvc://<claim> is mounted")
    p.add_argument("--s3-credentials-dir", type=Path, default=None,
                   help="mounted Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY files (optional "
                        "AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL); none: anonymous")
    p.add_argument("--sample-max-params", type=float, default=1e9,
                   help="none/fp8: generate a few tokens on CPU when the model has fewer parameters")
    p.add_argument("--eval-text-file", type=Path, default=None, help="perplexity text (default: built-in)")
    args = p.parse_args(argv)
    types = {t.lower(): t for t in FORMAT_TYPES[args.format]}
    if args.type.lower() not in types:
        p.error(f"--type {args.type} is not valid for --format {args.format}; choose from {FORMAT_TYPES[args.format]}")
    args.type = types[args.type.lower()]
    if args.tool is not None and args.format != "onnx":
        p.error(f"--tool {args.tool} applies to --format onnx only; leave it out for --format {args.format}")
    if args.tool == "olive" and args.type != "int4":
        p.error(f"--tool olive makes int4 only (Olive's GPTQ recipe); use --tool builder for --type {args.type}")
    if args.format == "onnx" and args.tool is None:
        args.tool = DEFAULT_ONNX_TOOL
    return args


def _check_remote_code(model_dir: Path, allowed: bool) -> dict[str, Any]:
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("auto_map") and not allowed:
        raise Unsupported("the model ships its own code (auto_map in config.json); "
                          "set trustRemoteCode to allow running it")
    return config


def _tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for name in ("transformers", "torch", "huggingface-hub", "tokenizers"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return versions


def _convert(args: argparse.Namespace, model_dir: Path, staging: Path, work: Path, text: str) -> dict[str, Any]:
    if args.format == "gguf":
        if args.target != "cpu":
            progress.emit("note", message="GGUF files run on CPU and GPU alike; target only labels the artifact")
        from . import gguf

        reason = gguf.unsupported_reason(json.loads((model_dir / "config.json").read_text()), args.type)
        if reason:
            raise Unsupported(reason)
        return gguf.run(model_dir, args.type, staging, work, text, SAMPLE_PROMPT)
    if args.format == "onnx":
        from . import onnx

        reason = onnx.unsupported_reason(json.loads((model_dir / "config.json").read_text()))
        if reason:
            raise Unsupported(reason)
        if args.tool == "olive":
            from . import olive

            reason = olive.unsupported_reason(json.loads((model_dir / "config.json").read_text()))
            if reason:
                raise Unsupported(reason)
            return olive.run(model_dir, args.type, args.target, staging, work, text, SAMPLE_PROMPT,
                             args.trust_remote_code)
        return onnx.run(model_dir, args.type, args.target, staging, work, text, SAMPLE_PROMPT,
                        args.trust_remote_code)
    if args.format == "mlx":
        from . import mlx

        reason = mlx.unsupported_reason(json.loads((model_dir / "config.json").read_text()))
        if reason:
            raise Unsupported(reason)
        return mlx.run(model_dir, args.type, staging, work, text, SAMPLE_PROMPT, args.trust_remote_code)
    from . import awq

    return awq.run(model_dir, args.format, staging, text, SAMPLE_PROMPT, args.trust_remote_code)


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    summary: dict[str, Any] = {"format": args.format, "type": args.type, "artifact": str(args.output)}
    existing = artifact.read_manifest(args.output)
    if existing is not None:  # fast path: no lock, no work
        return {**summary, **_summary_from(existing, args.output), "result": "AlreadyComplete",
                "message": f"artifact {args.output} is already complete"}
    token = read_secret_file(args.token_file)
    with artifact.ArtifactWriter(args.output) as writer:
        if writer.complete is not None:  # finished by another run while we waited for the lock
            return {**summary, **_summary_from(writer.complete, args.output), "result": "AlreadyComplete",
                    "message": f"artifact {args.output} is already complete"}
        cache = args.download_dir or args.output.resolve().parent / ".hf-cache"
        t = time.monotonic()
        fetched = fetch.resolve(args.source, args.revision, cache_dir=cache, pvc_root=args.pvc_root, token=token,
                                s3_credentials_dir=args.s3_credentials_dir)
        download_s = round(time.monotonic() - t, 2)
        _check_remote_code(fetched.path, args.trust_remote_code)
        if args.format in PASSTHROUGH:
            manifest = _publish_passthrough(args, writer, fetched, download_s, started)
            return {**summary, **_summary_from(manifest, args.output), "result": "Succeeded",
                    "message": f"{args.format} {args.type} artifact written ({manifest['totalBytes']} bytes); "
                               f"{manifest['perplexity']['skipped']}"}
        checksums = fetch.verify_checksums(fetched)
        text = args.eval_text_file.read_text() if args.eval_text_file else corpus.eval_text()
        with artifact.scratch_dir(args.output) as work:
            result = _convert(args, fetched.path, writer.staging, work, text)
        before, after = result["reference"]["perplexity"], result["quantized_perplexity"]
        increase = relative_increase_pct(before, after)
        ppl = {"reference": round(before, 4), "quantized": round(after, 4), "increasePct": round(increase, 3),
               "gatePct": args.max_ppl_increase_pct, "referenceKind": result["reference"]["kind"],
               "evalTokens": result["eval_tokens"]}
        if "bytes" in result["reference"]:
            ppl["referenceBytes"] = result["reference"]["bytes"]
        progress.emit("gate", **ppl)
        if increase > args.max_ppl_increase_pct:
            raise GateFailed(f"perplexity rose {increase:.2f}% ({before:.3f} -> {after:.3f}), "
                             f"above the {args.max_ppl_increase_pct}% gate; the artifact was not written")
        timings = {"download": download_s, **result["timings"], "total": round(time.monotonic() - started, 2)}
        manifest = writer.publish({
            "format": args.format, "type": args.type, "target": args.target,
            **({"tool": args.tool} if args.tool else {}),
            "source": args.source, "revision": args.revision, "resolvedRevision": fetched.resolved_revision,
            "sourceBytes": fetched.bytes, "perplexity": ppl, "sample": result["sample"],
            "verification": {"checksums": checksums},
            "tools": {**_tool_versions(), **result["tools"]}, "timings": timings,
            "trustRemoteCode": args.trust_remote_code,
        })
    return {**summary, **_summary_from(manifest, args.output), "result": "Succeeded",
            "message": f"{args.format} {args.type} artifact written ({manifest['totalBytes']} bytes)"}


def _publish_passthrough(args: argparse.Namespace, writer: artifact.ArtifactWriter, fetched: fetch.Fetched,
                         download_s: float, started: float) -> dict[str, Any]:
    """none / fp8: the verified HF folder is the artifact; no perplexity gate (nothing quantized)."""
    from . import passthrough

    result = passthrough.run(fetched, args.format, args.type, writer.staging, SAMPLE_PROMPT,
                             args.trust_remote_code, int(args.sample_max_params),
                             downloaded=args.source.startswith(("hf://", "s3://")))
    reason = passthrough.skipped_reason(args.format, args.type)
    ppl = {"reference": None, "quantized": None, "increasePct": None, "gatePct": args.max_ppl_increase_pct,
           "skipped": reason}
    progress.emit("gate", **ppl)
    timings = {"download": download_s, **result["timings"], "total": round(time.monotonic() - started, 2)}
    return writer.publish({
        "format": args.format, "type": args.type, "target": args.target,
        "source": args.source, "revision": args.revision, "resolvedRevision": fetched.resolved_revision,
        "sourceBytes": fetched.bytes, "sourceDtype": result["sourceDtype"], "quantizedBy": result["quantizedBy"],
        "perplexity": ppl, "sample": result["sample"], "verification": result["verification"],
        "tools": _tool_versions(), "timings": timings, "trustRemoteCode": args.trust_remote_code,
    })


def _summary_from(manifest: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The termination summary's artifact facts. manifestSha256 is the sha256 of the artifact's
    manifest.json, which lists every file's size and sha256: one checksum for the whole
    artifact (`sha256sum manifest.json` checks it; artifact.verify checks the files)."""
    ppl = manifest.get("perplexity") or {}
    digest = None
    with contextlib.suppress(OSError):
        digest = artifact.sha256_file(Path(folder) / artifact.MANIFEST)
    return {"manifestSha256": digest, **({"tool": manifest["tool"]} if manifest.get("tool") else {}),
            "perplexityBefore": ppl.get("reference"), "perplexityAfter": ppl.get("quantized"),
            "increasePct": ppl.get("increasePct"), "gatePct": ppl.get("gatePct"),
            "totalBytes": manifest.get("totalBytes"), "sourceBytes": manifest.get("sourceBytes")}


def main(argv: list[str] | None = None) -> int:
    """Entry point: quantize (the default), or `export ...` (export.py: push a finished artifact)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        from . import export

        return export.main(argv[1:])
    args = parse_args(argv)
    base = {"format": args.format, "type": args.type, "artifact": str(args.output)}
    token_hint: str | None = None
    secrets: list[str | None] = []
    try:
        token_hint = read_secret_file(args.token_file) if args.token_file else None
        secrets = [token_hint, *_s3_secrets(args.s3_credentials_dir)]
        volume = args.output.resolve().parent
        with diskspace.translate(volume, args.download_dir or volume / ".hf-cache", args.format):
            summary, code = run(args), 0
    except diskspace.DiskFull as exc:
        summary, code = {**base, "result": "DiskFull", "message": str(exc), **exc.facts}, EXIT_DISK_FULL
    except GateFailed as exc:
        summary, code = {**base, "result": "GateFailed", "message": str(exc)}, EXIT_GATE
    except (Unsupported, *_unsupported_errors()) as exc:
        summary, code = {**base, "result": "Unsupported", "message": str(exc)}, EXIT_UNSUPPORTED
    except fetch.SourceError as exc:
        result = "SourceUnavailable" if exc.transient else "SourceError"
        summary, code = {**base, "result": result, "message": str(exc)}, EXIT_CODES[result]
    except (SecretFileError, *_source_errors()) as exc:
        summary, code = {**base, "result": "SourceError", "message": str(exc)}, EXIT_USAGE
    except _conversion_errors() as exc:
        msg = redact(str(exc), *secrets)
        summary, code = {**base, "result": "ConversionFailed", "message": msg}, EXIT_CONVERSION
    except Exception as exc:
        msg = redact(f"{type(exc).__name__}: {exc}", *secrets)
        summary, code = {**base, "result": "Failed", "message": msg}, EXIT_FAILED
    progress.emit("done", **summary)
    progress.write_termination_message(args.termination_log, summary)
    if code:
        print(f"slm_quantizer: {summary['result']}: {summary['message']}", file=sys.stderr)
    return code


def _unsupported_errors() -> tuple[type[Exception], ...]:
    from . import awq, passthrough

    return (awq.GpuRequired, passthrough.Unsupported)


def _conversion_errors() -> tuple[type[Exception], ...]:
    from . import gguf, mlx, onnx

    return (gguf.GgufError, onnx.OnnxError, mlx.MlxError)


def _s3_secrets(folder: Path | None) -> list[str | None]:
    """The S3 secret values, only to redact them from unexpected error messages."""
    from . import s3

    with contextlib.suppress(SecretFileError, OSError):
        creds = s3.read_credentials(folder)
        return [creds.get(k) for k in s3.SECRET_KEYS]
    return []


def _source_errors() -> tuple[type[Exception], ...]:
    from . import passthrough

    return (passthrough.InvalidModel,)
