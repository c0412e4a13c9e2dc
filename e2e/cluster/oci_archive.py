"""Write a one-layer OCI image archive holding a single static binary (the pod sandbox image;
Prometheus and its config reloader for the autoscaling e2e).

The upstream pause image cannot be pulled here; `ctr images import` takes this archive (OCI
image layout in a tar, image-spec v1.1) and names the image from the index annotation
`io.containerd.image.name` (containerd's images/archive importer).

Usage: python3 oci_archive.py --binary PATH --path /pause --entrypoint /pause
                              --name registry.k8s.io/pause:3.10.1 --out pause.oci.tar
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile


def _blob(tar: tarfile.TarFile, data: bytes) -> dict[str, object]:
    """Add `data` under blobs/sha256/<digest>; return its digest and size."""
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(binary: str, path: str) -> bytes:
    """An uncompressed layer tar with the binary at `path` (mode 0755, root-owned, mtime 0),
    its parent folders first (e.g. bin/ for /bin/prometheus)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as layer, open(binary, "rb") as f:
        parts = path.strip("/").split("/")[:-1]
        for i in range(len(parts)):
            folder = tarfile.TarInfo("/".join(parts[: i + 1]))
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            layer.addfile(folder)
        data = f.read()
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode = len(data), 0o755
        layer.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_archive(binary: str, path: str, entrypoint: str, name: str, out: str) -> None:
    """Write the archive to `out`. Deterministic: the same binary gives the same digests."""
    layer = _layer(binary, path)
    diff_id = f"sha256:{hashlib.sha256(layer).hexdigest()}"
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": [entrypoint], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }, sort_keys=True).encode()
    with tarfile.open(out, "w") as tar:
        cfg = _blob(tar, config)
        lay = _blob(tar, layer)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **lay}],
        }, sort_keys=True).encode()
        man = _blob(tar, manifest)
        index = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **man,
                           "annotations": {"io.containerd.image.name": name,
                                           "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}],
        }, sort_keys=True).encode()
        for fname, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)):
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--binary", "--path", "--entrypoint", "--name", "--out"):
        ap.add_argument(flag, required=True)
    a = ap.parse_args()
    write_archive(a.binary, a.path, a.entrypoint, a.name, a.out)
