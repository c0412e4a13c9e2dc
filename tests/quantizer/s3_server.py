"""A real S3 API on 127.0.0.1 (moto's server) holding a model under a prefix, with IAM auth on.

    with S3Server() as s3:
        key_id, secret = s3.credentials             # an IAM user allowed s3:* (auth enforced)
        s3.upload_folder(folder, "models", "qwen3/")

moto checks signatures only after its "reset-auth" switch: the fixture creates the user, key,
bucket and objects first, then turns authentication on, so the quantizer's requests are
checked (unknown key -> InvalidAccessKeyId, wrong secret -> SignatureDoesNotMatch).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path
from typing import Any

import pytest

POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


class S3Server:
    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            pytest.skip(f"needs moto[server] ({exc}); run: .venv/bin/pip install -e '.[dev]'")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log in test output
        self._server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
        self.url = ""
        self.credentials: tuple[str, str] = ("", "")

    def client(self, service: str, key_id: str = "admin", secret: str = "admin") -> Any:
        import boto3

        return boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret,
                                     region_name="us-east-1").client(service, endpoint_url=self.url)

    def __enter__(self) -> S3Server:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        # moto keeps its backends per process, not per server: start from nothing (an earlier
        # server in this pytest process made the same IAM user and buckets).
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10).read()
        iam = self.client("iam")
        iam.create_user(UserName="slm-quantizer")
        iam.put_user_policy(UserName="slm-quantizer", PolicyName="s3", PolicyDocument=json.dumps(POLICY))
        key = iam.create_access_key(UserName="slm-quantizer")["AccessKey"]
        self.credentials = (key["AccessKeyId"], key["SecretAccessKey"])
        return self

    def upload_folder(self, folder: Path, bucket: str, prefix: str, extra: dict[str, bytes] | None = None) -> None:
        s3 = self.client("s3")
        s3.create_bucket(Bucket=bucket)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket, prefix + path.relative_to(folder).as_posix())
        for key, data in (extra or {}).items():
            s3.put_object(Bucket=bucket, Key=key, Body=data)

    def enforce_auth(self, on: bool = True) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=b"0" if on else b"inf", method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()

    def __exit__(self, *exc: object) -> None:
        self.enforce_auth(False)  # a process-wide setting inside moto
        self._server.stop()


def write_credentials(folder: Path, key_id: str, secret: str, endpoint: str) -> Path:
    """A credentials folder as the Secret mount makes it: one key per file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
                        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        (folder / name).write_text(value + "\n")
    return folder
