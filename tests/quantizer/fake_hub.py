"""A minimal Hugging Face hub on 127.0.0.1 serving one local model folder, for download tests.

It implements what huggingface_hub's snapshot_download uses (repo info, file HEAD/GET with
commit and etag headers, Range requests), requires `Authorization: Bearer <token>` when a
token is set, publishes checksums like the hub (LFS sha256 for *.safetensors, the git blob
sha1 for the rest; `wrong_checksum` names a file whose published sha256 is wrong), and records
every request (method, path, auth header) so tests can assert the
token was sent and which files were fetched.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repo: str, folder: Path, token: str | None, wrong_checksum: str | None = None) -> None:
        self.repo, self.folder, self.token, self.wrong_checksum = repo, folder, token, wrong_checksum
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, body=False)

            def do_GET(self) -> None:
                hub._handle(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def _sibling(self, p: Path) -> dict:
        data = p.read_bytes()
        if p.suffix == ".safetensors":
            sha = hashlib.sha256(data + (b"x" if p.name == self.wrong_checksum else b"")).hexdigest()
            return {"rfilename": p.name, "size": len(data), "blobId": "0" * 40,
                    "lfs": {"size": len(data), "sha256": sha, "pointerSize": 134}}
        blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
        return {"rfilename": p.name, "size": len(data), "blobId": blob}

    def _send(self, h: BaseHTTPRequestHandler, code: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        h.send_response(code)
        for k, v in {"Content-Length": str(len(data)), **headers}.items():
            h.send_header(k, v)
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(h.path).path)
        auth = h.headers.get("Authorization")
        self.requests.append((h.command, path, auth))
        if self.token and auth != f"Bearer {self.token}":
            msg = json.dumps({"error": "Invalid credentials"}).encode()
            return self._send(h, 401, msg, {"Content-Type": "application/json", "X-Error-Code": "GatedRepo"}, body)
        api = f"/api/models/{self.repo}/revision/"
        if path.startswith(api) or path == f"/api/models/{self.repo}":
            info = {"id": self.repo, "sha": COMMIT, "private": True,
                    "siblings": [self._sibling(p) for p in self._files()]}
            return self._send(h, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        if path.startswith(f"/api/models/{self.repo}/tree/"):
            tree = [{"type": "file", "path": p.name, "size": p.stat().st_size,
                     "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in self._files()]
            return self._send(h, 200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)
        prefix = f"/{self.repo}/resolve/"
        if path.startswith(prefix):
            name = path[len(prefix):].split("/", 1)[1]
            file = self.folder / name
            if not file.is_file():
                return self._send(h, 404, b"{}", {"X-Error-Code": "EntryNotFound"}, body)
            data = file.read_bytes()
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Accept-Ranges": "bytes"}
            rng = h.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(h, 206, data[start:], headers, body)
            return self._send(h, 200, data, headers, body)
        return self._send(h, 404, b"{}", {}, body)
