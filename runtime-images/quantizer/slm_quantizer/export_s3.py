"""Export to s3://bucket/prefix: objects <prefix>/<key>/<file>, manifest.json last.

Credentials and endpoint come from the mounted Secret's files exactly as for s3:// sources
(s3.read_credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN,
AWS_REGION, AWS_ENDPOINT_URL); the ambient AWS credential chain is never consulted.

Every object carries its sha256 as user metadata (x-amz-meta-sha256) and is uploaded with the
SHA-256 transfer checksum (the server rejects a body that arrived damaged). manifest.json goes
last, so its presence marks a complete push, as on the volume. Idempotent: when the remote
manifest.json's bytes have the local manifest's sha256 and every listed object has its size
and sha256, nothing is uploaded (AlreadyPresent); an interrupted push resumes with the objects
still missing. After a push every object is checked again (size and sha256 metadata).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from slm_runtime import artifact, progress
from slm_runtime.secrets import redact

from . import s3
from .export import ExportError, LocalArtifact, now


def _fail(exc: Exception, what: str, creds: dict[str, str]) -> ExportError:
    err = s3._error(exc, what, creds)
    return ExportError(str(err), transient=err.transient)


def _head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _matches(head: dict[str, Any] | None, size: int, sha256: str) -> bool:
    return head is not None and head.get("ContentLength") == size and \
        (head.get("Metadata") or {}).get("sha256") == sha256


def remote_state(client: Any, bucket: str, base: str, art: LocalArtifact) -> list[str]:
    """The relative paths (manifest.json included) that are missing or differ under base."""
    entries = [*art.files, {"path": artifact.MANIFEST, "size": (art.folder / artifact.MANIFEST).stat().st_size,
                            "sha256": art.manifest_sha256}]
    return [e["path"] for e in entries if not _matches(_head(client, bucket, base + e["path"]), e["size"],
                                                          e["sha256"])]


def push(art: LocalArtifact, target: str, creds_dir: Path | None, plain_http: bool = False) -> dict[str, Any]:
    """Push the artifact under s3://bucket/prefix/<key>/; the export result entry.

    Raises ExportError (S3 error code and a hint, never a secret; transient unless the code is
    one a retry cannot fix, e.g. InvalidAccessKeyId, AccessDenied, NoSuchBucket)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        bucket, prefix = s3.parse_url(target)
    except s3.S3Error as exc:
        raise ExportError(str(exc)) from None
    base = f"{prefix}{art.key}/"
    url = f"s3://{bucket}/{base}"
    creds = s3.read_credentials(creds_dir)
    client = s3._client(creds)
    try:
        # A GET first: HEAD answers carry no body, so a refusal would read "403" without its code.
        client.list_objects_v2(Bucket=bucket, Prefix=base, MaxKeys=1)
        missing = remote_state(client, bucket, base, art)
    except (ClientError, BotoCoreError) as exc:
        raise _fail(exc, f"checking {url}", creds) from None
    head = None
    if not missing:
        head = _head(client, bucket, base + artifact.MANIFEST)
        return {"result": "AlreadyPresent", "url": url, "revision": _version(head), "files": 0, "bytes": 0,
                "message": f"{url} already holds this artifact (manifest sha256 matches)",
                "pushedAt": _time(head)}
    by_path = {f["path"]: f for f in art.files}
    pushed_files = pushed_bytes = 0
    order = [p for p in missing if p != artifact.MANIFEST] + [artifact.MANIFEST]  # the marker last
    for rel in order:
        digest = art.manifest_sha256 if rel == artifact.MANIFEST else by_path[rel]["sha256"]
        path = art.folder / rel
        progress.emit("export", target=target, file=rel, bytes=path.stat().st_size)
        try:
            client.upload_file(str(path), bucket, base + rel, ExtraArgs={
                "Metadata": {"sha256": digest}, "ChecksumAlgorithm": "SHA256",
                **({"ContentType": "application/json"} if rel == artifact.MANIFEST else {})})
        except (ClientError, BotoCoreError) as exc:
            raise _fail(exc, f"upload of {url}{rel}", creds) from None
        except S3UploadFailedError as exc:  # boto3's transfer wraps the ClientError in this
            raise ExportError(redact(f"S3 upload of {url}{rel} failed: {exc}", *(
                creds.get(k) for k in s3.SECRET_KEYS)), transient=_transient_text(str(exc))) from None
        pushed_files += 1
        pushed_bytes += path.stat().st_size
    try:
        still = remote_state(client, bucket, base, art)
        head = _head(client, bucket, base + artifact.MANIFEST)
        body = client.get_object(Bucket=bucket, Key=base + artifact.MANIFEST)["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise _fail(exc, f"verifying {url}", creds) from None
    if still or hashlib.sha256(body).hexdigest() != art.manifest_sha256:
        raise ExportError(f"S3 verification of {url} failed after the push: {', '.join(still) or 'manifest.json'} "
                          "does not match the local sha256", transient=True)
    return {"result": "Pushed", "url": url, "revision": _version(head), "files": pushed_files,
            "bytes": pushed_bytes, "pushedAt": now(),
            "message": f"pushed {pushed_files} object(s), {pushed_bytes} bytes, to {url}; verified"}


def _version(head: dict[str, Any] | None) -> str | None:
    """The manifest object's version id (versioned buckets) or ETag: what identifies this push."""
    if not head:
        return None
    version = head.get("VersionId")
    return version if version and version != "null" else str(head.get("ETag", "")).strip('"') or None


def _time(head: dict[str, Any] | None) -> str:
    modified = (head or {}).get("LastModified")
    return modified.strftime("%Y-%m-%dT%H:%M:%SZ") if modified is not None else now()


def _transient_text(text: str) -> bool:
    return not any(code in text for code in s3.PERMANENT_CODES)
