"""Make PyPI's Linux torch wheel import on a CPU-only machine without its CUDA wheels.

PyPI ships one Linux x86_64 torch build, linked against CUDA: libtorch_cpu.so and
friends list libcudart.so.13, libcublas.so.13, libcudnn.so.9, ... as NEEDED, and the
nvidia-* wheels that carry them weigh several GB. Installing torch with --no-deps and
running this script instead builds one small stub library (every CUDA symbol torch
imports, each returning an error code) and installs it under every missing CUDA soname
in torch/lib, which torch's RUNPATH ($ORIGIN) searches. CPU code paths never call the
stubs; CUDA initialisation gets an error back, so torch.cuda.is_available() is False.

Usage: python torch_cuda_stubs.py <torch package dir>     (stdlib only; needs readelf, cc)
Idempotent: rerunning rebuilds the same stubs.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Sonames of the CUDA libraries (CUDA runtime, math libraries, driver, NCCL, NVSHMEM...).
_CUDA_SONAME = re.compile(r"^lib(cu|nv|nccl)[A-Za-z_]*\.so(\.\d+)*$")
_CUDA_SYMBOL = re.compile(r"^(cu|nccl|nv|__cuda)")
# Return values: cudaErrorInsufficientDriver for CUDA runtime calls; strings where asked.
_STRING_FUNCS = {"cudaGetErrorString", "cudaGetErrorName", "ncclGetErrorString", "nvrtcGetErrorString"}
_SYSTEM_LIBS = [
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libm.so.6",
    "/lib/x86_64-linux-gnu/libstdc++.so.6",
    "/lib/x86_64-linux-gnu/libgcc_s.so.1",
]


def _readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True, text=True).stdout


def _needed(lib: Path) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _readelf("-d", str(lib)))


def _dyn_symbols(lib: Path) -> tuple[set[str], set[str]]:
    """(defined, undefined) dynamic symbol names; undefined keep their '@version' suffix."""
    defined: set[str] = set()
    undefined: set[str] = set()
    for line in _readelf("--dyn-syms", str(lib)).splitlines():
        cols = line.split()
        if len(cols) < 8 or not cols[0].rstrip(":").isdigit():
            continue
        name = cols[7]
        if cols[6] == "UND":
            undefined.add(name)
        else:
            defined.add(name.split("@")[0])
    return defined, undefined


def _version_owners(lib: Path) -> dict[str, str]:
    """version tag -> soname that must define it (from the .gnu.version_r section)."""
    owners: dict[str, str] = {}
    current = ""
    for line in _readelf("-V", str(lib)).splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Name: (\S+)", line)
        if m and current:
            owners[m.group(1)] = current
    return owners


def build(torch_dir: Path) -> list[str]:
    lib_dir = torch_dir / "lib"
    libs = sorted([*lib_dir.glob("*.so"), *lib_dir.glob("*.so.*"), *torch_dir.glob("_C*.so")])
    libs = [p for p in libs if not p.is_symlink() and not p.name.startswith("libcudastub")]
    present = {p.name for p in lib_dir.iterdir()}
    defined: set[str] = set()
    undefined: set[str] = set()
    owners: dict[str, str] = {}
    missing: set[str] = set()
    for lib in libs:
        d, u = _dyn_symbols(lib)
        defined |= d
        undefined |= u
        owners |= _version_owners(lib)
        missing |= {n for n in _needed(lib) if _CUDA_SONAME.match(n) and n not in present}
    for sys_lib in _SYSTEM_LIBS:
        if Path(sys_lib).exists():
            defined |= _dyn_symbols(Path(sys_lib))[0]
    # Generated stubs from an earlier run count as missing again (rebuilt below).
    missing |= {n for n in present if _CUDA_SONAME.match(n) and (lib_dir / n).is_symlink()}

    versions: dict[str, set[str]] = {}
    plain: set[str] = set()
    for sym in undefined:
        name, _, tag = sym.partition("@")
        if tag and owners.get(tag) in missing:
            versions.setdefault(tag, set()).add(name)
        elif not tag and _CUDA_SYMBOL.match(name) and name not in defined:
            plain.add(name)
    if not missing:
        return []

    every = sorted(plain | set().union(*versions.values()) if versions else plain)
    c_lines = ['static const char msg[] = "CUDA is not available (CPU-only torch install)";']
    for i, name in enumerate(every):
        value = "(long)msg" if name in _STRING_FUNCS else "35"
        c_lines.append(f'long stub_{i}(void) __asm__("{name}");')
        c_lines.append(f"long stub_{i}(void) {{ return {value}; }}")
    script = []
    for tag, names in sorted(versions.items()):
        script.append(f"{tag} {{ global: {' '.join(n + ';' for n in sorted(names))} }};")
    script.append("STUB_BASE { global: *; };")

    with tempfile.TemporaryDirectory() as tmp:
        src, ver = Path(tmp, "stub.c"), Path(tmp, "stub.map")
        src.write_text("\n".join(c_lines) + "\n")
        ver.write_text("\n".join(script) + "\n")
        out = lib_dir / "libcudastub.so"
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-O0", "-w", "-o", str(out), str(src), f"-Wl,--version-script={ver}"],
            check=True,
        )
    for soname in sorted(missing):
        link = lib_dir / soname
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to("libcudastub.so")
    return sorted(missing)


if __name__ == "__main__":
    stubbed = build(Path(sys.argv[1]))
    print(f"torch CUDA stubs installed for: {', '.join(stubbed) or 'nothing (all present)'}")
