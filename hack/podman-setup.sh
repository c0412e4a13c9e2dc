#!/usr/bin/env bash
# Finds a container engine that can build and run containers on this machine, configuring
# podman/buildah once when their defaults fail here.
#
# Usage: hack/podman-setup.sh            prints the engine on stdout: docker, podman or buildah
#        SLM_ENGINE=podman hack/podman-setup.sh   only that engine
# Exit:  0  an engine works (its name on stdout)
#        3  no container engine works here; one line on stderr says why
#
# Order: docker when its daemon answers, else podman, else buildah (what images.sh then uses).
# Each is checked by really running a process in a container made from a throw-away root
# filesystem (the host's /bin/true and its libraries), so no image has to be pulled.
#
# podman/buildah: when that check fails, this script writes a drop-in,
#   root:     /etc/containers/containers.conf.d/50-slm-operator.conf
#   rootless: ~/.config/containers/containers.conf.d/50-slm-operator.conf
# (SLM_CONTAINERS_CONF_D overrides the folder) with only the settings this kind of machine needs,
# and checks again. A user's own containers.conf is never touched, and a machine where the
# defaults work gets no file at all. What the drop-in sets, and the error that forces each:
# - default_ulimits at or below the hard limits: podman asks runc for nofile=1048576 and nproc at
#   the hard limit ("error setting rlimit type 7 / type 6: operation not permitted"); nproc must
#   also stay at or below kernel.pid_max here (32768 worked, 32769 did not).
# - runtime = "runc" when cgroups are v1/hybrid: crun refuses them ("cgroups in hybrid mode not
#   supported").
# - cgroup_manager = "cgroupfs" when systemd is not the init system (no systemd to ask).
set -euo pipefail

NO_ENGINE=3
log() { echo "podman-setup: $*" >&2; }
fail() { echo "podman-setup: $*" >&2; exit "$NO_ENGINE"; }

WORK="$(mktemp -d)"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# A root filesystem holding /true and the libraries it links (a few MB, no image needed).
make_rootfs() {
  local root="$WORK/rootfs" lib bin
  bin="$(type -P true)"
  mkdir -p "$root"
  cp "$bin" "$root/true"
  if command -v ldd >/dev/null; then
    for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*'); do
      mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
    done
  fi
  echo "$root"
}

# Runs /true in a container; on failure leaves the engine's last error line in $WORK/err.
check_podman() {
  local root; root="$(make_rootfs)"
  timeout 120 podman run --rm --network none --rootfs "$root" /true >"$WORK/out" 2>"$WORK/err"
}

check_buildah() {
  local root ctr ok=1; root="$(make_rootfs)"
  ctr="$(timeout 60 buildah from scratch 2>"$WORK/err")" || return 1
  if timeout 60 buildah copy "$ctr" "$root" / >/dev/null 2>>"$WORK/err" \
     && timeout 120 buildah run --network none "$ctr" /true >"$WORK/out" 2>>"$WORK/err"; then
    ok=0
  fi
  buildah rm "$ctr" >/dev/null 2>&1 || true
  return "$ok"
}

last_error() { grep -v '^\s*$' "$WORK/err" 2>/dev/null | tail -n 1 | cut -c1-300; }

dropin_dir() {
  if [[ -n "${SLM_CONTAINERS_CONF_D:-}" ]]; then echo "$SLM_CONTAINERS_CONF_D"
  elif [[ "$(id -u)" == 0 ]]; then echo /etc/containers/containers.conf.d
  else echo "${XDG_CONFIG_HOME:-$HOME/.config}/containers/containers.conf.d"
  fi
}

write_dropin() {
  local dir file nofile nproc pidmax runtime_line="" manager_line=""
  dir="$(dropin_dir)"
  file="$dir/50-slm-operator.conf"
  nofile="$(ulimit -Hn)"; [[ "$nofile" == unlimited ]] && nofile=1048576
  nproc="$(ulimit -Hu)"; [[ "$nproc" == unlimited ]] && nproc=4194304
  pidmax="$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo "$nproc")"
  (( nproc > pidmax )) && nproc="$pidmax"
  # cgroup v2 only when the unified hierarchy is mounted at /sys/fs/cgroup itself.
  if [[ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]] && command -v runc >/dev/null; then
    runtime_line='runtime = "runc"'
  fi
  [[ -d /run/systemd/system ]] || manager_line='cgroup_manager = "cgroupfs"'
  mkdir -p "$dir"
  {
    echo "# Written by slm-operator hack/podman-setup.sh because podman's defaults failed here:"
    echo "#   $(last_error)"
    echo "# Delete this file to undo; the script writes it again only when the defaults fail."
    echo "[containers]"
    echo "default_ulimits = [\"nofile=${nofile}:${nofile}\", \"nproc=${nproc}:${nproc}\"]"
    if [[ -n "$runtime_line$manager_line" ]]; then
      echo "[engine]"
      [[ -n "$manager_line" ]] && echo "$manager_line"
      [[ -n "$runtime_line" ]] && echo "$runtime_line"
    fi
  } >"$file.tmp"
  mv "$file.tmp" "$file"
  log "wrote $file"
}

# podman or buildah: check, configure once if needed, check again.
try_libpod() {
  local engine="$1" why
  command -v "$engine" >/dev/null || return 1
  "check_$engine" && return 0
  why="$(last_error)"
  if [[ -n "${CONTAINERS_CONF:-}" ]]; then
    # A user-chosen file replaces every other containers.conf (drop-ins included): leave it be.
    echo "$engine fails with CONTAINERS_CONF=$CONTAINERS_CONF: $why" >"$WORK/why"
    return 1
  fi
  if [[ -f "$(dropin_dir)/50-slm-operator.conf" ]]; then
    echo "$engine fails even with $(dropin_dir)/50-slm-operator.conf: $why" >"$WORK/why"
    return 1
  fi
  write_dropin || { echo "$engine fails ($why) and $(dropin_dir) is not writable" >"$WORK/why"; return 1; }
  if "check_$engine"; then return 0; fi
  echo "$engine cannot run a container here: $(last_error)" >"$WORK/why"
  return 1
}

want="${SLM_ENGINE:-}"
case "$want" in ""|docker|podman|buildah) ;; *) fail "SLM_ENGINE=$want: expected docker, podman or buildah" ;; esac

if [[ -z "$want" || "$want" == docker ]] && command -v docker >/dev/null \
   && timeout 20 docker info >/dev/null 2>&1; then
  echo docker; exit 0
fi
[[ "$want" == docker ]] && fail "docker: no daemon answers ($(timeout 20 docker info 2>&1 | tail -n 1 | cut -c1-200))"
for engine in podman buildah; do
  [[ -n "$want" && "$want" != "$engine" ]] && continue
  if try_libpod "$engine"; then echo "$engine"; exit 0; fi
  [[ -f "$WORK/why" ]] && break   # the engine exists but cannot run containers: say why
done
if [[ -f "$WORK/why" ]]; then
  fail "no container engine works: $(cat "$WORK/why")"
fi
fail "no container engine found (a docker daemon, podman or buildah); install podman (apt-get install podman runc) or start docker"
