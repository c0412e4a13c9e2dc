"""`python -m slm_vllm`: check the options and the environment, then exec `vllm serve`.

Two ways in:
  python -m slm_vllm --config /etc/slm/engine.json        typed options (JSON, or YAML by suffix)
  python -m slm_vllm [--] <vllm serve args...>             args the operator rendered with build_args
Either way the argument list passes check_serve_args, and the environment passes check_environment,
before the process is replaced by vLLM (exec: vLLM gets PID 1's signals directly).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence

from slm_vllm.args import UnsafeArgsError, build_args, check_serve_args
from slm_vllm.artifact import agree_with_folder, fit_max_len
from slm_vllm.options import VLLM_VERSION, OptionsError, load_options

API_KEY_ENV = "VLLM_API_KEY"

# Environment switches that open dev/unsafe features; each must be unset or falsy.
FORBIDDEN_ENV: dict[str, str] = {
    "VLLM_SERVER_DEV_MODE": "registers dev endpoints (reset caches, sleep, collective RPC)",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "lets API clients load adapters from arbitrary paths",
    "VLLM_ALLOW_INSECURE_SERIALIZATION": "enables pickle between processes",
    "VLLM_DEBUG_LOG_API_SERVER_RESPONSE": "logs every response body",
    "VLLM_TRACE_FUNCTION": "traces every function call to disk",
}

# Set for the vLLM process unless the pod already sets them: no phone-home, no hub traffic at
# run time (the model is a local artifact), caches under /tmp for a read-only root filesystem.
DEFAULT_ENV: dict[str, str] = {
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HOME": "/tmp",
    "XDG_CACHE_HOME": "/tmp/.cache",
    "VLLM_CACHE_ROOT": "/tmp/.cache/vllm",
    "VLLM_CONFIG_ROOT": "/tmp/.config/vllm",
}


class LaunchError(RuntimeError):
    """The launcher refuses to start vLLM; the message says why."""


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def check_environment(env: Mapping[str, str]) -> None:
    for name, why in FORBIDDEN_ENV.items():
        if _truthy(env.get(name, "")):
            raise LaunchError(f"{name}={env[name]!r} is refused: it {why}; unset it or set it to 0")


def child_environment(env: Mapping[str, str], *, api_key_file: str | None, allow_unauthenticated: bool
                      ) -> dict[str, str]:
    """The environment vLLM runs with; the API key comes from the env (Secret) or a mounted file."""
    out = {**DEFAULT_ENV, **env}
    if api_key_file:
        try:
            with open(api_key_file, encoding="utf-8") as fh:
                key = fh.read().strip()
        except OSError as err:
            raise LaunchError(f"cannot read the API key file {api_key_file}: {err.strerror}") from err
        if not key:
            raise LaunchError(f"the API key file {api_key_file} is empty")
        out[API_KEY_ENV] = key
    if not out.get(API_KEY_ENV, "").strip():
        if not allow_unauthenticated:
            raise LaunchError(
                f"no API key: set {API_KEY_ENV} from a Secret or pass --api-key-file; "
                "--allow-unauthenticated starts vLLM without authentication (development only)"
            )
        out.pop(API_KEY_ENV, None)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m slm_vllm", allow_abbrev=False,
        description=f"Check options and environment, then exec `vllm serve` (vLLM {VLLM_VERSION}).",
        epilog="Arguments not listed above are `vllm serve` arguments (after an optional --).",
    )
    p.add_argument("--config", help="typed options file (JSON; YAML when it ends in .yaml/.yml)")
    p.add_argument("--api-key-file", help="file holding the API key (a mounted Secret); else VLLM_API_KEY")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="start without an API key (development only)")
    p.add_argument("--vllm-bin", default="vllm", help="the vllm executable (default: vllm on PATH)")
    p.add_argument("--print-args", action="store_true",
                   help="print the checked command as JSON and exit instead of exec'ing it")
    return p


def plan(argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str], bool]:
    """(command, environment, print only) to exec; raises LaunchError/OptionsError/UnsafeArgsError."""
    ns, rest = _parser().parse_known_args(list(argv))
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if ns.config and rest:
        raise LaunchError("pass either --config or vllm serve arguments, not both (use extra_args)")
    if ns.config:
        serve_args = build_args(load_options(ns.config))
    elif rest:
        serve_args = list(rest)
        check_serve_args(serve_args, owned_allowed=True)
    else:
        raise LaunchError("nothing to serve: pass --config FILE or vllm serve arguments")
    for fit in (agree_with_folder, fit_max_len):  # what the model folder itself says
        serve_args, note = fit(serve_args)
        if note:
            print(f"slm_vllm: {note}", file=sys.stderr)
    check_environment(env)
    child_env = child_environment(env, api_key_file=ns.api_key_file,
                                  allow_unauthenticated=ns.allow_unauthenticated)
    return [ns.vllm_bin, "serve", *serve_args], child_env, ns.print_args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cmd, env, print_only = plan(argv, os.environ)
    except (LaunchError, OptionsError, UnsafeArgsError) as err:
        print(f"slm_vllm: {err}", file=sys.stderr)
        return 2
    if print_only:
        print(json.dumps(cmd))
        return 0
    exe = shutil.which(cmd[0], path=env.get("PATH"))
    if exe is None:
        print(f"slm_vllm: {cmd[0]!r} not found on PATH", file=sys.stderr)
        return 127
    print(f"slm_vllm: exec {json.dumps(cmd)}", file=sys.stderr, flush=True)  # the key is never in cmd
    os.execve(exe, cmd, env)
    return 0  # not reached
