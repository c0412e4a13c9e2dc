"""Export to oci://host[:port]/repository: an ORAS-style OCI artifact tagged <key>.

The OCI distribution API (distribution-spec v1.1) over httpx, as `oras push` lays it out:

- config: the empty descriptor (``application/vnd.oci.empty.v1+json``, ``{}``);
- one layer per artifact file (manifest.json included), media type
  ``application/vnd.oci.image.layer.v1.tar`` (ORAS' default for files), annotated
  ``org.opencontainers.image.title: <relative path>`` so ``oras pull`` writes the files back;
- ``artifactType: application/vnd.slm-operator.model.v1``, manifest annotations with the
  artifact key, the manifest sha256 and ``org.opencontainers.image.created`` (the artifact's
  createdAt, so the same artifact always gives the same manifest digest).

A layer's digest is the file's sha256 from manifest.json, and the registry recomputes it when
an upload completes (a damaged upload is refused). Idempotent: the tag's manifest digest is
compared with the one this artifact gives (HEAD); equal: nothing is pushed (AlreadyPresent);
blobs the registry already has are not uploaded again (HEAD per blob).

Credentials, from the mounted Secret: ``.dockerconfigjson`` (kubernetes.io/dockerconfigjson:
``auths[host].auth`` or ``username``/``password``) or the keys ``username`` and ``password``
(kubernetes.io/basic-auth). The registry's challenge decides Basic or a Bearer token (the
token service is called with those credentials). https unless plainHTTP is set.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from slm_runtime import artifact, progress

from .export import ExportError, LocalArtifact, http_client_module, now, read_file_secret

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.slm-operator.model.v1"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json",
         "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2,
         "data": "e30="}
TIMEOUT_S = 60.0


def parse_target(target: str) -> tuple[str, str]:
    """oci://host[:port]/repo/path -> ("host[:port]", "repo/path"). Raises ExportError."""
    rest = target[len("oci://"):]
    host, _, repo = rest.partition("/")
    repo = repo.strip("/")
    if not host or not repo or ":" in repo or "@" in repo:
        raise ExportError(f"OCI export target must be oci://HOST[:PORT]/REPOSITORY (no tag: the tag is the "
                          f"artifact key), got {target!r}")
    return host, repo


def credentials(creds_dir: Path | None, host: str) -> tuple[str, str] | None:
    """(username, password) for host from the Secret's files, or None (anonymous)."""
    raw = read_file_secret(creds_dir, ".dockerconfigjson")
    if raw:
        try:
            auths = json.loads(raw).get("auths", {})
        except (ValueError, AttributeError):
            raise ExportError("the credentials Secret's .dockerconfigjson is not valid JSON") from None
        entry = auths.get(host) or auths.get(f"https://{host}") or auths.get(f"http://{host}")
        if entry is None:
            raise ExportError(f"the credentials Secret's .dockerconfigjson has no auths entry for {host}")
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
        return entry.get("username", ""), entry.get("password", "")
    user, password = read_file_secret(creds_dir, "username"), read_file_secret(creds_dir, "password")
    if user is not None or password is not None:
        return user or "", password or ""
    return None


def build_manifest(art: LocalArtifact) -> bytes:
    """The OCI image manifest (canonical JSON bytes) for the artifact: deterministic."""
    files = [*art.files, {"path": artifact.MANIFEST, "size": (art.folder / artifact.MANIFEST).stat().st_size,
                          "sha256": art.manifest_sha256}]
    layers = [{"mediaType": LAYER_TYPE, "digest": f"sha256:{f['sha256']}", "size": f["size"],
               "annotations": {"org.opencontainers.image.title": f["path"]}} for f in files]
    body = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": ARTIFACT_TYPE, "config": EMPTY,
            "layers": layers,
            "annotations": {"org.opencontainers.image.created": str(art.manifest.get("createdAt") or ""),
                            "ai.slm.artifact.key": art.key,
                            "ai.slm.artifact.manifest-sha256": art.manifest_sha256}}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class Registry:
    """A minimal distribution-spec client for one repository, with Basic or Bearer auth."""

    def __init__(self, host: str, repo: str, creds: tuple[str, str] | None, plain_http: bool) -> None:
        httpx = http_client_module()

        self.base = f"{'http' if plain_http else 'https'}://{host}/v2/{repo}"
        self.repo = repo
        self.creds = creds
        self.client = httpx.Client(timeout=TIMEOUT_S, follow_redirects=True)
        self.auth_header: str | None = None
        self.requests: list[tuple[str, str]] = []  # (method, url) sent, for tests and the log

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def request(self, method: str, url: str, **kw: Any) -> Any:
        """Send a request; on a 401 answer its challenge once and resend."""
        httpx = http_client_module()

        full = url if url.startswith("http") else self.base + url
        for attempt in range(2):
            headers = {**kw.pop("headers", {}), **({"Authorization": self.auth_header} if self.auth_header else {})}
            self.requests.append((method, full))
            try:
                resp = self.client.request(method, full, headers=headers, **kw)
            except httpx.TransportError as exc:
                raise ExportError(f"OCI registry {self.base.split('/v2/')[0]} cannot be reached: "
                                  f"{type(exc).__name__}: {exc}", transient=True) from None
            if resp.status_code != 401 or attempt:
                return resp
            self._authenticate(resp)
            kw["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
        return resp

    def _authenticate(self, resp: Any) -> None:
        challenge = resp.headers.get("WWW-Authenticate", "")
        scheme, _, params = challenge.partition(" ")
        if self.creds is None:
            raise ExportError(f"OCI registry {self.base} asks for credentials ({scheme or '401'}): give the target a "
                              "credentialsSecret (.dockerconfigjson, or username and password)")
        basic = base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
        if scheme.lower() == "bearer":
            fields = dict(part.split("=", 1) for part in _split_challenge(params))
            fields = {k: v.strip('"') for k, v in fields.items()}
            realm = fields.pop("realm", "")
            fields["scope"] = f"repository:{self.repo}:pull,push"
            token = self.client.get(f"{realm}?{urlencode(fields)}", headers={"Authorization": f"Basic {basic}"})
            if token.status_code != 200:
                raise ExportError(f"OCI token service refused the credentials ({token.status_code}): "
                                  f"{_server_words(token)}; check the credentials Secret")
            data = token.json()
            self.auth_header = f"Bearer {data.get('token') or data.get('access_token')}"
        else:
            self.auth_header = f"Basic {basic}"

    def has_blob(self, digest: str) -> bool:
        """True when the repository already holds the blob."""
        resp = self.request("HEAD", f"/blobs/{digest}")
        self.check(resp, f"HEAD blob {digest[:19]}", ok=(200, 404))
        return resp.status_code == 200

    def put_blob(self, digest: str, path: Path | None = None, data: bytes | None = None) -> None:
        """A monolithic upload (POST, then PUT ?digest=); the registry checks the digest."""
        resp = self.request("POST", "/blobs/uploads/")
        self.check(resp, "start of a blob upload", ok=(202,))
        location = resp.headers["Location"]
        if location.startswith("/"):
            location = self.base.split("/v2/")[0] + location
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream"}
        if path is not None:
            with open(path, "rb") as fh:
                headers["Content-Length"] = str(path.stat().st_size)
                resp = self.request("PUT", f"{location}{sep}digest={digest}", content=fh, headers=headers)
        else:
            resp = self.request("PUT", f"{location}{sep}digest={digest}", content=data, headers=headers)
        self.check(resp, f"upload of blob {digest[:19]}", ok=(201,))

    def manifest_digest(self, tag: str) -> str | None:
        """The tag's manifest digest (sha256 of the bytes the registry serves), None when the tag
        does not exist. A GET, not a HEAD: a refusal then comes with the registry's words."""
        resp = self.request("GET", f"/manifests/{tag}", headers={"Accept": MANIFEST_TYPE})
        self.check(resp, f"reading manifest {tag}", ok=(200, 404))
        if resp.status_code == 404:
            return None
        return "sha256:" + hashlib.sha256(resp.content).hexdigest()

    def put_manifest(self, tag: str, body: bytes) -> str:
        """PUT the manifest under tag; the digest the registry answers."""
        resp = self.request("PUT", f"/manifests/{tag}", content=body, headers={"Content-Type": MANIFEST_TYPE})
        self.check(resp, f"PUT manifest {tag}", ok=(201,))
        return resp.headers.get("Docker-Content-Digest", "")

    def check(self, resp: Any, what: str, ok: tuple[int, ...]) -> None:
        """Raise ExportError with the registry's own words unless the status is in ok."""
        if resp.status_code in ok:
            return
        code = resp.status_code
        hint = {401: "the registry refused the credentials: check the credentials Secret",
                403: "the credentials may not push to this repository"}.get(code, "")
        raise ExportError(f"OCI {what} at {self.base} failed ({code}): {_server_words(resp)}"
                          + (f"; {hint}" if hint else ""), transient=code == 429 or code >= 500)


def _split_challenge(params: str) -> list[str]:
    """'realm="a,b",service="x"' -> ['realm="a,b"', 'service="x"'] (commas inside quotes kept)."""
    out, cur, quoted = [], "", False
    for ch in params:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return [p for p in out if "=" in p]


def _server_words(resp: Any) -> str:
    """The registry's error message(s) (distribution-spec errors[].message), else the status text."""
    try:
        errors = resp.json().get("errors") or []
        words = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
        if words:
            return words
    except (ValueError, AttributeError):
        pass
    return resp.reason_phrase or str(resp.status_code)


def push(art: LocalArtifact, target: str, creds_dir: Path | None, plain_http: bool = False) -> dict[str, Any]:
    """Push the artifact as oci://host/repo:<key>; the export result entry. Raises ExportError."""
    host, repo = parse_target(target)
    creds = credentials(creds_dir, host)
    manifest = build_manifest(art)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    url = f"{host}/{repo}:{art.key}"
    reg = Registry(host, repo, creds, plain_http)
    try:
        if reg.manifest_digest(art.key) == digest:
            return {"result": "AlreadyPresent", "url": url, "digest": digest, "files": 0, "bytes": 0,
                    "message": f"{url} already is this artifact (manifest digest {digest[:19]}...)"}
        pushed_files = pushed_bytes = 0
        if not reg.has_blob(EMPTY["digest"]):
            reg.put_blob(EMPTY["digest"], data=b"{}")
        files = [*art.files, {"path": artifact.MANIFEST, "sha256": art.manifest_sha256}]
        for f in files:
            blob = f"sha256:{f['sha256']}"
            if reg.has_blob(blob):
                continue
            path = art.folder / f["path"]
            progress.emit("export", target=target, file=f["path"], bytes=path.stat().st_size)
            reg.put_blob(blob, path=path)
            pushed_files += 1
            pushed_bytes += path.stat().st_size
        answered = reg.put_manifest(art.key, manifest)
        if answered and answered != digest:
            raise ExportError(f"OCI registry stored the manifest of {url} as {answered}, expected {digest}",
                              transient=True)
        if reg.manifest_digest(art.key) != digest:
            raise ExportError(f"OCI verification of {url} failed after the push: the tag does not point at {digest}",
                              transient=True)
    finally:
        reg.close()
    return {"result": "Pushed", "url": url, "digest": digest, "files": pushed_files, "bytes": pushed_bytes,
            "pushedAt": now(), "message": f"pushed {pushed_files} blob(s), {pushed_bytes} bytes, and the manifest "
                                          f"to {url}; verified"}

