"""The quantizer tests' hub: one local model folder as one repo, on 127.0.0.1.

A thin wrapper over e2e/hubserver.py (the local hub the e2e tests and the demo use), kept
for the quantizer tests' fixed commit SHA and one-repo API. It requires
`Authorization: Bearer <token>` when a token is set, publishes checksums like the hub (LFS
sha256 for *.safetensors and other weight files, the git blob sha1 for the rest;
`wrong_checksum` names a file whose published sha256 is wrong), and records every request
(method, path, auth header) so tests can assert the token was sent and which files were
fetched.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended: nothing in the repository root shadows an installed module

from e2e.hubserver import HubRequest, HubServer, build_revision, git_object_sha1, self_signed_tls  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"

__all__ = ["COMMIT", "FakeHub", "HubRequest", "HubServer", "build_revision", "git_object_sha1", "self_signed_tls"]


class FakeHub(HubServer):
    """HubServer on 127.0.0.1 serving `folder` as `repo` at commit COMMIT (branch main)."""

    def __init__(self, repo: str, folder: Path, token: str | None, wrong_checksum: str | None = None) -> None:
        super().__init__("127.0.0.1", 0, token=token)
        self.repo, self.folder = repo, folder
        self.add_repo(repo, folder, commit=COMMIT, corrupt_sha256=[wrong_checksum] if wrong_checksum else ())
