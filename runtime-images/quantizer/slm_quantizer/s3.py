"""s3://bucket/prefix sources: download the model files under a prefix (AWS S3, MinIO, Ceph, ...).

Credentials come only from files in --s3-credentials-dir (a mounted Secret, one key per file):
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN, AWS_REGION and
AWS_ENDPOINT_URL (MinIO and friends; path-style addressing is used then). Without the folder
the bucket is read anonymously (public buckets). The ambient AWS credential chain (env vars,
~/.aws, instance metadata) is never consulted: the Job reads what its Secret says, nothing else.

Resumable: an object whose local file already has the listed size is not fetched again; files
arrive under a hidden temporary name and are renamed into place, so a killed Job never leaves a
truncated file under the real name. Local files no longer listed under the prefix are removed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from slm_runtime import progress
from slm_runtime.secrets import SecretFileError, redact

CREDENTIAL_FILES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                    "AWS_ENDPOINT_URL")
SECRET_KEYS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class S3Error(RuntimeError):
    """The bucket cannot be listed or read (message safe to show: no secret in it).

    transient: a retry may succeed (connection trouble, throttling, a server error); False for
    what the same inputs always meet (access denied, no such bucket, not a model folder)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# S3 error codes a retry cannot fix.
PERMANENT_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "NoSuchBucket", "NoSuchKey",
                   "ExpiredToken", "InvalidBucketName", "AllAccessDisabled", "InvalidToken"}


@dataclass(frozen=True)
class S3Download:
    path: Path
    bytes: int
    fingerprint: str  # sha256 over the sorted (key, etag) pairs: changes when any object changes
    md5: dict[str, str]  # relative path -> md5 from a single-part ETag (multipart ETags are not md5s)


def parse_url(source: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix/") (prefix "" for the whole bucket)."""
    bucket, _, prefix = source[len("s3://"):].partition("/")
    if not bucket:
        raise S3Error(f"S3 source must be s3://<bucket>/<prefix>, got {source!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def read_credentials(folder: Path | str | None) -> dict[str, str]:
    """The credential files present in folder (values stripped); {} when no folder is given."""
    if not folder:
        return {}
    d = Path(folder)
    if not d.is_dir():
        raise SecretFileError(f"S3 credentials folder {d} does not exist (is the Secret mounted?)")
    creds = {}
    for key in CREDENTIAL_FILES:
        f = d / key
        if f.is_file():
            try:
                value = f.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SecretFileError(f"S3 credential file {f} cannot be read: {exc.strerror}") from None
            if value:
                creds[key] = value
    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k not in creds]
    if missing:
        raise SecretFileError(f"S3 credentials folder {d} lacks {' and '.join(missing)} (one key per file)")
    return creds


def _client(creds: dict[str, str]) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    endpoint = creds.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = creds.get("AWS_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    config = Config(retries={"max_attempts": 5, "mode": "standard"},
                    s3={"addressing_style": "path" if endpoint else "auto"},
                    signature_version=None if creds else UNSIGNED)
    # A session with explicit keys (or none, unsigned): never the default credential chain.
    session = boto3.session.Session(aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
                                    aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
                                    aws_session_token=creds.get("AWS_SESSION_TOKEN"), region_name=region)
    return session.client("s3", endpoint_url=endpoint, config=config)


def _error(exc: Exception, what: str, creds: dict[str, str]) -> S3Error:
    """A clear message from a botocore error: the S3 error code, a hint, never a secret."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    hints = {"InvalidAccessKeyId": "the access key is not known to the server; check the credentials Secret",
             "SignatureDoesNotMatch": "the secret key is wrong; check the credentials Secret",
             "AccessDenied": "the credentials may not read this bucket/prefix",
             "NoSuchBucket": "the bucket does not exist", "ExpiredToken": "the session token has expired"}
    detail = f"{code}: {hints.get(code, '')}".rstrip(": ") if code else f"{type(exc).__name__}: {exc}"
    return S3Error(redact(f"S3 {what} failed: {detail}", *(creds.get(k) for k in SECRET_KEYS)),
                   transient=code not in PERMANENT_CODES)


def _list(client: Any, bucket: str, prefix: str, patterns: list[str]) -> list[dict[str, Any]]:
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):]
            if rel and not rel.endswith("/") and not any(part.startswith(".") for part in rel.split("/")) \
                    and any(fnmatch(rel, pat) for pat in patterns):
                objects.append({"rel": rel, "key": obj["Key"], "size": obj["Size"],
                                "etag": obj.get("ETag", "").strip('"')})
    return objects


def download(source: str, dest: Path, patterns: list[str], credentials_dir: Path | str | None,
             select: Callable[[list[str]], list[str]] | None = None) -> S3Download:
    """Mirror the objects under source matching patterns (and kept by select) into dest (resumable)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_url(source)
    creds = read_credentials(credentials_dir)
    client = _client(creds)
    try:
        objects = _list(client, bucket, prefix, patterns)
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc, f"listing s3://{bucket}/{prefix}", creds) from None
    if select is not None:
        keep = set(select([o["rel"] for o in objects]))
        objects = [o for o in objects if o["rel"] in keep]
    if not any(o["rel"] == "config.json" for o in objects):
        raise S3Error(f"s3://{bucket}/{prefix} has no config.json: not a Hugging Face model folder")
    total = sum(o["size"] for o in objects)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {o["rel"] for o in objects}
    for stale in [p for p in dest.rglob("*") if p.is_file() and p.relative_to(dest).as_posix() not in wanted]:
        stale.unlink()  # removed from the bucket since the last run, or a temp file of a killed run
    done = sum(o["size"] for o in objects if _have(dest / o["rel"], o["size"]))
    progress.emit("download", source=source, objects=len(objects), bytes=done, total=total)
    started, last = time.monotonic(), time.monotonic()
    for obj in objects:
        target = dest / obj["rel"]
        if _have(target, obj["size"]):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.part-", dir=target.parent)
        os.close(fd)
        try:
            client.download_file(bucket, obj["key"], tmp)
            os.replace(tmp, target)
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, f"download of s3://{bucket}/{obj['key']}", creds) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        done += obj["size"]
        if time.monotonic() - last > 2.0:
            progress.emit("download", bytes=done, total=total)
            last = time.monotonic()
    progress.emit("download", bytes=done, total=total, seconds=round(time.monotonic() - started, 2))
    fingerprint = hashlib.sha256("\n".join(f"{o['key']} {o['etag']}" for o in sorted(
        objects, key=lambda o: o["key"])).encode()).hexdigest()
    md5 = {o["rel"]: o["etag"].lower() for o in objects
           if len(o["etag"]) == 32 and all(c in "0123456789abcdefABCDEF" for c in o["etag"])}
    return S3Download(dest, total, f"s3-etags-sha256:{fingerprint}", md5)


def _have(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size
