#!/usr/bin/env bash
# Builds, pushes and exports the project's container images (`make images`, `make images-push`).
#
# Usage (from anywhere; the build context is the repository root):
#   hack/images.sh [build] [NAME...]       build every image, or the NAMEs given (or SLM_IMAGES="a b")
#   hack/images.sh push REGISTRY [NAME...] tag ghcr.io/slm-operator/<name>:<tag> as
#                                          REGISTRY/slm-operator/<name>:<tag> and push it
#   hack/images.sh save NAME|REF PATH      export one image as an OCI archive at PATH
#                                          (podman save --format oci-archive); load it on a node
#                                          with: ctr -n k8s.io images import PATH
#   hack/images.sh ref NAME                print the reference of one image
#   hack/images.sh list                    print "NAME REF" for every image
#   hack/images.sh prune                   remove untagged images (old builds and the build-step
#                                          cache: frees disk, the next changed build is slower)
#   hack/images.sh base                    build (cached) the SLM_BASE=debian base, print its ref
#   hack/images.sh ollama-bin              build (cached) the ollama binary, print its path
#   hack/images.sh llama-server-bin        build (cached) llama.cpp's llama-server, print its folder
#   hack/images.sh llama-cpp-src           unpack (cached) the pinned llama.cpp's server, common and
#                                          gguf-py sources, print the folder (tests read flags and
#                                          metric names from them)
# NAMEs: operator quantizer onnxruntime-server ollama vllm llamacpp gateway. References are what the chart and the
# operator default to (ghcr.io/slm-operator/<name>:<tag>), so a local cluster needs no override.
#
# Environment:
#   SLM_BASE=debian   build the bases from Debian's packages (mmdebstrap) instead of pulling the
#                     upstream ones (python:3.11-slim, ollama/ollama, vllm/vllm-openai); tests and
#                     machines that cannot pull use it. vLLM is then skipped unless asked for by name.
#   SLM_IMAGES        the images to build, e.g. "operator onnxruntime-server"
#   SLM_ENGINE        docker, podman or buildah (default: what hack/podman-setup.sh finds)
#   SLM_CACHE         cache folder (default ~/.cache/slm-operator): the ollama and llama-server binaries
#   SLM_BUILD_CA      CA bundle folder mounted read-only at /etc/ssl/certs while building
#                     (podman/buildah; default /etc/ssl/certs when it exists; "none" for no mount)
#   PIP_CACHE_DIR     pip cache mounted at /root/.cache/pip while building (podman/buildah), so
#                     the llama-cpp-python wheel `make venv` compiled is reused (default ~/.cache/pip)
#   PUSH_TLS_VERIFY   "false" to push to a plain-HTTP registry with podman/buildah
#
# Caching: each image is labelled with a hash of its inputs (its Dockerfile, the files its COPY
# lines take from the repository, the build arguments and the base images' IDs); a build is
# skipped when an image with that reference and label exists. Builds run one at a time.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$REPO/hack"
CACHE="${SLM_CACHE:-$HOME/.cache/slm-operator}"
LABEL_KEY="io.slm-operator.inputs"
OLLAMA_VERSION="0.13.5"   # also runtime-images/ollama/Dockerfile's OLLAMA_IMAGE default
LLAMA_CPP_VERSION="$(sed -n 's/^LLAMA_CPP_VERSION=//p' "$REPO/runtime-images/install-ml-deps.sh")"
DEBIAN_SUITE="bookworm"   # python3 is 3.11 there, as in the python:3.11 upstream bases
DEBIAN_PACKAGES="python3,python3-venv,python-is-python3,ca-certificates"

ALL=(operator quantizer onnxruntime-server ollama vllm llamacpp gateway)

log() { echo "images: $*" >&2; }
die() { echo "images: $*" >&2; exit 1; }

dockerfile_of() {
  case "$1" in
    operator) echo operator/Dockerfile ;;
    quantizer|onnxruntime-server|ollama|vllm|llamacpp|gateway) echo "runtime-images/$1/Dockerfile" ;;
    *) die "unknown image '$1' (expected one of: ${ALL[*]})" ;;
  esac
}

# The chart's defaults: the operator's tag is the chart's appVersion, a runtime image's tag is
# the `tag:` under its `repository: slm-operator/<name>` in values.yaml.
ref_of() {
  local name="$1" tag
  dockerfile_of "$name" >/dev/null
  if [[ "$name" == operator ]]; then
    tag="$(awk '$1 == "appVersion:" { gsub(/["\047]/, "", $2); print $2; exit }' "$REPO/charts/slm-operator/Chart.yaml")"
  else
    tag="$(awk -v repo="slm-operator/$name" '
      $1 == "repository:" { hit = ($2 == repo) }
      hit && $1 == "tag:" { gsub(/"/, "", $2); print $2; exit }' "$REPO/charts/slm-operator/values.yaml")"
  fi
  [[ -n "$tag" ]] || die "no default tag for $name in charts/slm-operator"
  echo "ghcr.io/slm-operator/$name:$tag"
}

# --- the container engine -------------------------------------------------------------------
ENGINE=""
engine() {
  if [[ -z "$ENGINE" ]]; then
    local rc=0
    ENGINE="$(bash "$HERE/podman-setup.sh")" || rc=$?
    [[ $rc == 0 ]] || exit "$rc"   # podman-setup.sh said why (exit 3: no engine works here)
  fi
  echo "$ENGINE"
}
e() { "$(engine)" "$@"; }

# Prints the image's ID, or nothing when the engine has no such image.
image_id() {
  case "$(engine)" in
    buildah) buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true ;;
    *) e image inspect --format '{{.Id}}' "$1" 2>/dev/null || true ;;
  esac
}

image_label() {
  case "$(engine)" in
    buildah) buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true ;;
    *) e image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true ;;
  esac
}

image_size_mb() {
  local bytes
  case "$(engine)" in
    # buildah has no size field: the sum of the layers' uncompressed sizes from podman's store.
    buildah) bytes="$(buildah images --format '{{.Size}}' --noheading "$1" 2>/dev/null | head -n 1)"; echo "$bytes"; return ;;
    *) bytes="$(e image inspect --format '{{.Size}}' "$1" 2>/dev/null || echo 0)" ;;
  esac
  echo "$((bytes / 1000000)) MB"
}

# Common build flags: host network (the builds reach the package registries from the host's
# network), and for podman/buildah the host CA bundle and pip cache as build-time mounts (never
# stored in a layer). docker's builder takes no mounts.
build_flags() {
  local ca="${SLM_BUILD_CA:-/etc/ssl/certs}" pipcache="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
  echo --network=host
  [[ "$(engine)" == docker ]] && return 0
  # docker format keeps HEALTHCHECK (OCI has none), as docker does; --layers caches steps.
  printf '%s\n' --pull=missing --format=docker --layers
  if [[ "$ca" != none && -d "$ca" ]]; then echo "--volume=$ca:/etc/ssl/certs:ro"; fi
  mkdir -p "$pipcache" && echo "--volume=$pipcache:/root/.cache/pip"
}

engine_build() {   # engine_build ARGS... CONTEXT
  local flags; mapfile -t flags < <(build_flags)
  case "$(engine)" in
    buildah) buildah bud "${flags[@]}" "$@" ;;
    *) e build "${flags[@]}" "$@" ;;
  esac
}

# --- input hashes -----------------------------------------------------------------------------
# COPY sources (not --from) of a Dockerfile, continuation lines joined.
copy_sources() {
  awk '{ if (sub(/\\[ \t]*$/, "")) { buf = buf $0 " "; next } print buf $0; buf = "" }' "$REPO/$1" \
    | awk 'toupper($1) == "COPY" && $0 !~ /--from/ {
             for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }'
}

# Files under the given repository paths, as git sees them (tracked and untracked, not ignored:
# the same set .dockerignore lets into the build), sorted; outside git every file.
files_under() {
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$REPO" ls-files -co --exclude-standard -- "$@" | sort -u
  else
    (cd "$REPO" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | sort -u)
  fi
}

inputs_hash() {   # inputs_hash DOCKERFILE EXTRA...
  local df="$1"; shift
  local srcs; mapfile -t srcs < <(copy_sources "$df")
  {
    echo "$df"; cat "$REPO/$df"
    if (( ${#srcs[@]} )); then
      files_under "${srcs[@]}" | while IFS= read -r f; do
        [[ -f "$REPO/$f" ]] && (cd "$REPO" && sha256sum -- "$f")
      done
    fi
    printf '%s\n' "$@"
  } | sha256sum | cut -c1-16
}

# --- SLM_BASE=debian: the Python base and the Ollama base ------------------------------------
MMDEBSTRAP_ARGS=(--variant=minbase "--include=$DEBIAN_PACKAGES"
  # As Debian's slim images: no manuals, docs (copyrights kept) or translations.
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*')
IMPORT_CHANGES=('ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
                'ENV LANG=C.UTF-8' 'CMD ["/bin/bash"]')

engine_import() {   # engine_import TARBALL REF
  local c ch args=()
  case "$(engine)" in
    buildah)
      c="$(buildah from scratch)"
      buildah add "$c" "$1" / >/dev/null
      buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd /bin/bash "$c"
      buildah commit -q "$c" "$2" >/dev/null && buildah rm "$c" >/dev/null ;;
    *)
      for ch in "${IMPORT_CHANGES[@]}"; do args+=(--change "$ch"); done
      e import "${args[@]}" "$1" "$2" >"$1.log" 2>&1 || { cat "$1.log" >&2; return 1; } ;;
  esac
}

debian_base() {
  local key ref start tmp
  key="$(printf '%s\n' "$DEBIAN_SUITE" "${MMDEBSTRAP_ARGS[@]}" "${IMPORT_CHANGES[@]}" | sha256sum | cut -c1-12)"
  ref="localhost/slm-debian-base:$DEBIAN_SUITE-$key"
  if [[ -n "$(image_id "$ref")" ]]; then echo "$ref"; return 0; fi
  command -v mmdebstrap >/dev/null || die "SLM_BASE=debian needs mmdebstrap (apt-get install mmdebstrap)"
  start=$SECONDS
  tmp="$(mktemp -d)"
  log "building $ref with mmdebstrap (about 1-2 min)"
  if ! nice -n 10 mmdebstrap -q "${MMDEBSTRAP_ARGS[@]}" "$DEBIAN_SUITE" "$tmp/rootfs.tar" >&2; then
    rm -rf "$tmp"; die "mmdebstrap failed for $ref"
  fi
  engine_import "$tmp/rootfs.tar" "$ref"
  rm -rf "$tmp"
  log "built $ref in $((SECONDS - start)) s, $(image_size_mb "$ref")"
  echo "$ref"
}

# The ollama binary from its Go module (cgo, CPU), cached by version. The module zip leaves out
# every vendor/ folder, so llama.cpp's vendored C/C++ headers (nlohmann, miniaudio, stb,
# cpp-httplib) are missing; the pinned llama-cpp-python sdist carries the same folder.
ollama_bin() {
  local out="$CACHE/bin/ollama-v$OLLAMA_VERSION" tmp py start
  if [[ -x "$out" ]]; then echo "$out"; return 0; fi
  command -v go >/dev/null || die "the ollama binary builds from its Go module: install Go (1.24 or newer)"
  py="python3"; [[ -x "$REPO/.venv/bin/python" ]] && py="$REPO/.venv/bin/python"
  start=$SECONDS
  tmp="$(mktemp -d)"
  log "building ollama v$OLLAMA_VERSION from its Go module (cgo, CPU; a few minutes)"
  "$py" -m pip download -q --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION" >&2
  tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp" "llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp/vendor"
  if ! CGO_ENABLED=1 CGO_CPPFLAGS="-I$tmp/llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp/vendor" \
       GOBIN="$tmp/bin" GOFLAGS=-buildvcs=false nice -n 10 go install -trimpath \
       -ldflags "-s -w -X github.com/ollama/ollama/version.Version=$OLLAMA_VERSION" \
       "github.com/ollama/ollama@v$OLLAMA_VERSION" >&2; then
    rm -rf "$tmp"; die "go install github.com/ollama/ollama@v$OLLAMA_VERSION failed"
  fi
  mkdir -p "$(dirname "$out")"
  mv "$tmp/bin/ollama" "$out.tmp" && mv "$out.tmp" "$out"
  rm -rf "$tmp"
  log "built $out in $((SECONDS - start)) s"
  echo "$out"
}

# Debian base + /usr/bin/ollama: what ollama/ollama provides to runtime-images/ollama/Dockerfile,
# which stays the same for both bases. The cgo build links only libc, libm, libgcc_s and
# libstdc++, all in the minbase (apt needs them); the build-time --version run proves it.
ollama_base() {
  local base="$1" bin tmp key ref start
  bin="$(ollama_bin)"
  tmp="$(mktemp -d)"
  cp "$bin" "$tmp/ollama"
  cat >"$tmp/Dockerfile" <<'EOF'
ARG BASE
FROM ${BASE}
COPY ollama /usr/bin/ollama
ENV OLLAMA_HOST=0.0.0.0:11434
RUN ["/usr/bin/ollama", "--version"]
ENTRYPOINT ["/usr/bin/ollama"]
CMD ["serve"]
EOF
  key="$( (cat "$tmp/Dockerfile"; sha256sum <"$tmp/ollama"; image_id "$base") | sha256sum | cut -c1-12)"
  ref="localhost/slm-ollama-base:$OLLAMA_VERSION-$key"
  if [[ -z "$(image_id "$ref")" ]]; then
    start=$SECONDS
    engine_build -q --build-arg "BASE=$base" -t "$ref" "$tmp" >/dev/null \
      || { rm -rf "$tmp"; die "building $ref failed"; }
    log "built $ref in $((SECONDS - start)) s, $(image_size_mb "$ref")"
  fi
  rm -rf "$tmp"
  echo "$ref"
}

# llama.cpp's llama-server from the llama.cpp source the pinned llama-cpp-python sdist vendors (CPU;
# runtime-images/llamacpp/build-llama-server.sh), cached by version: linked against the venv's
# llama-cpp-python libraries when it has the pinned version, else all of llama.cpp, static. The llamacpp image
# build mounts this folder at /prebuilt (podman/buildah) instead of compiling it again.
llama_server_bin() {
  local out="$CACHE/bin/llama-server-$LLAMA_CPP_VERSION" py start tmp lock libs
  if [[ -x "$out/bin/llama-server" ]]; then echo "$out"; return 0; fi
  py="python3"; [[ -x "$REPO/.venv/bin/python" ]] && py="$REPO/.venv/bin/python"
  mkdir -p "$(dirname "$out")"
  exec {lock}>"$out.lock" && flock "$lock"   # one build at a time (parallel test sessions wait)
  if [[ -x "$out/bin/llama-server" ]]; then echo "$out"; return 0; fi
  start=$SECONDS
  log "building llama-server (llama-cpp-python $LLAMA_CPP_VERSION's llama.cpp, CPU; 5-60 min on 2 cores)"
  tmp="$(mktemp -d "$out.build-XXXXXX")"
  # llama-cpp-python's own libraries where the venv has the pinned version (make venv built them
  # for the quantizer): only the server's sources are compiled (minutes, not an hour on 2 cores).
  libs="$("$py" -c 'import sysconfig, llama_cpp; print(sysconfig.get_paths()["purelib"] + "/lib", llama_cpp.__version__)' 2>/dev/null || true)"
  if [[ "${libs#* }" == "$LLAMA_CPP_VERSION" && -e "${libs% *}/libllama-common.so" ]]; then libs="${libs% *}"; else libs=""; fi
  LLAMA_LIB_DIR="$libs" PYTHON="$py" LLAMA_CPP_VERSION="$LLAMA_CPP_VERSION" JOBS="${JOBS:-2}" nice -n 10 \
    bash "$REPO/runtime-images/llamacpp/build-llama-server.sh" "$tmp" >&2 \
    || { rm -rf "$tmp"; die "building llama-server failed"; }
  rm -rf "$out" && mv "$tmp" "$out"
  log "built $out in $((SECONDS - start)) s"
  echo "$out"
}

# The pinned llama-cpp-python sdist's llama.cpp sources the engine tests read (common/arg.cpp's
# flags, tools/server's routes and metric names, gguf-py's quant sizes), cached by version. Only
# those folders are unpacked (a few MB of the sdist's ~60).
llama_cpp_src() {
  local root="$CACHE/src/llama-cpp-python" dir py tmp
  dir="$root/llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp"
  if [[ -f "$dir/common/arg.cpp" && -d "$dir/tools/server" && -d "$dir/gguf-py" ]]; then echo "$dir"; return 0; fi
  py="python3"; [[ -x "$REPO/.venv/bin/python" ]] && py="$REPO/.venv/bin/python"
  mkdir -p "$root"
  tmp="$(mktemp -d "$root/.unpack-XXXXXX")"
  "$py" -m pip download -q --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION" >&2 \
    || { rm -rf "$tmp"; die "pip download llama-cpp-python==$LLAMA_CPP_VERSION (sdist) failed"; }
  local sub="llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp"
  tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp" "$sub/common" "$sub/tools/server" "$sub/gguf-py" \
    || { rm -rf "$tmp"; die "the llama-cpp-python $LLAMA_CPP_VERSION sdist lacks $sub/{common,tools/server,gguf-py}"; }
  rm -rf "$root/llama_cpp_python-$LLAMA_CPP_VERSION"
  mv "$tmp/llama_cpp_python-$LLAMA_CPP_VERSION" "$root/" && rm -rf "$tmp"
  echo "$dir"
}

# --- build --------------------------------------------------------------------------------------
build_one() {
  local name="$1" explicit="$2" df ref hash start args=() bases=() a
  df="$(dockerfile_of "$name")"
  ref="$(ref_of "$name")"
  args+=(--build-arg "VERSION=${ref##*:}")
  if [[ "${SLM_BASE:-}" == debian ]]; then
    if [[ "$name" == vllm && "$explicit" != 1 ]]; then
      echo "vllm: skipped (SLM_BASE=debian: vLLM's wheel pulls several GB of CUDA libraries and serves only on a GPU; build it with SLM_IMAGES=vllm, or without SLM_BASE from vllm/vllm-openai)"
      return 0
    fi
    local py; py="$(debian_base)"
    args+=(--build-arg "PYTHON_IMAGE=$py"); bases+=("$py")
    case "$name" in
      ollama) a="$(ollama_base "$py")"; args+=(--build-arg "OLLAMA_IMAGE=$a"); bases+=("$a") ;;
      # The Dockerfile's vllm-pip stage: vLLM from its pinned wheel on PYTHON_IMAGE.
      vllm) args+=(--build-arg "VLLM_IMAGE=vllm-pip") ;;
      llamacpp) args+=(--build-arg "BUILD_IMAGE=$py" --build-arg "BASE_IMAGE=$py") ;;
    esac
  elif [[ -n "${SLM_BASE:-}" ]]; then
    die "SLM_BASE=${SLM_BASE}: expected 'debian' or unset (the upstream bases)"
  fi
  if [[ "$name" == llamacpp && "$(engine)" != docker ]]; then   # docker's builder takes no mounts
    a="$(llama_server_bin)"
    args+=("--volume=$a:/prebuilt:ro" --build-arg "LLAMA_SERVER_SHA256=$(sha256sum <"$a/bin/llama-server" | cut -c1-64)")
  fi
  local ids=()
  for a in "${bases[@]}"; do ids+=("$a=$(image_id "$a")"); done
  local flags; flags="$(build_flags | grep -v '^--volume' || true)"
  hash="$(inputs_hash "$df" "$(engine)" "$flags" "${args[@]}" "${ids[@]}")"
  if [[ "$(image_label "$ref" "$LABEL_KEY")" == "$hash" ]]; then
    printf '%-20s skipped %5s s  %9s  %s\n' "$name" 0 "$(image_size_mb "$ref")" "$ref"
    return 0
  fi
  local old; old="$(image_id "$ref")"
  start=$SECONDS
  log "building $ref from $df"
  if ! engine_build -f "$REPO/$df" -t "$ref" --label "$LABEL_KEY=$hash" "${args[@]}" "$REPO" \
       >"$CACHE/logs/build-$name.log" 2>&1; then
    tail -n 30 "$CACHE/logs/build-$name.log" >&2
    [[ -z "${SLM_BASE:-}" ]] && log "the upstream bases (python, ollama/ollama, vllm/vllm-openai) are pulled" \
      "by short name; where they cannot be pulled, SLM_BASE=debian builds the bases from Debian packages"
    die "building $name failed; full log: $CACHE/logs/build-$name.log"
  fi
  printf '%-20s built   %5s s  %9s  %s\n' "$name" "$((SECONDS - start))" "$(image_size_mb "$ref")" "$ref"
  # The image this one replaced, now untagged (its layers stay cached while still used).
  if [[ -n "$old" && "$old" != "$(image_id "$ref")" ]]; then e rmi "$old" >/dev/null 2>&1 || true; fi
}

cmd_build() {
  local names=("$@") explicit=1 n
  if (( ${#names[@]} == 0 )) && [[ -n "${SLM_IMAGES:-}" ]]; then read -ra names <<<"$SLM_IMAGES"; fi
  if (( ${#names[@]} == 0 )); then names=("${ALL[@]}"); explicit=0; fi
  for n in "${names[@]}"; do dockerfile_of "$n" >/dev/null; done
  mkdir -p "$CACHE/logs"
  engine >/dev/null
  for n in "${names[@]}"; do build_one "$n" "$explicit"; done
}

cmd_push() {
  local registry="${1:?usage: images.sh push REGISTRY [NAME...]}"; shift
  registry="${registry%/}"
  local names=("$@") n src dst flags=()
  (( ${#names[@]} )) || names=("${ALL[@]}")
  [[ "${PUSH_TLS_VERIFY:-true}" == false && "$(engine)" != docker ]] && flags+=(--tls-verify=false)
  for n in "${names[@]}"; do
    src="$(ref_of "$n")"
    if [[ -z "$(image_id "$src")" ]]; then
      echo "$n: not built ($src); run make images first (SLM_IMAGES=$n to build only it)" >&2
      [[ "$n" == vllm ]] && continue
      exit 1
    fi
    dst="$registry/${src#ghcr.io/}"
    e tag "$src" "$dst"
    e push -q "${flags[@]}" "$dst" >&2
    e rmi "$dst" >/dev/null 2>&1 || true   # drop the extra local name; the image keeps its own
    echo "pushed $dst"
  done
}

cmd_save() {
  local what="${1:?usage: images.sh save NAME|REF PATH}" path="${2:?usage: images.sh save NAME|REF PATH}" ref
  case "$what" in */*|*:*) ref="$what" ;; *) ref="$(ref_of "$what")" ;; esac
  [[ -n "$(image_id "$ref")" ]] || die "no image $ref: build it first (hack/images.sh build ${what})"
  mkdir -p "$(dirname "$path")"
  rm -f "$path"
  case "$(engine)" in
    docker) docker save -o "$path" "$ref" ;;   # docker 25+ writes an OCI layout that ctr imports
    buildah) buildah push -q "$ref" "oci-archive:$path:$ref" >/dev/null ;;
    podman) podman save -q --format oci-archive -o "$path" "$ref" ;;
  esac
  echo "$path"
}

case "${1:-build}" in
  build) shift || true; cmd_build "$@" ;;
  # engine first in this shell: its exit status (3: no engine works here) is the script's.
  push) shift; engine >/dev/null; cmd_push "$@" ;;
  save) shift; engine >/dev/null; cmd_save "$@" ;;
  ref) ref_of "${2:?usage: images.sh ref NAME}" ;;
  list) for n in "${ALL[@]}"; do echo "$n $(ref_of "$n")"; done ;;
  base) engine >/dev/null; debian_base ;;
  prune) engine >/dev/null; case "$ENGINE" in buildah) buildah rmi --prune ;; *) e image prune -f ;; esac >/dev/null ;;
  ollama-bin) ollama_bin ;;
  llama-server-bin) llama_server_bin ;;
  llama-cpp-src) llama_cpp_src ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) cmd_build "$@" ;;
esac
