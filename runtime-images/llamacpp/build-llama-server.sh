#!/usr/bin/env bash
# Builds llama.cpp's OpenAI-compatible server (llama-server) from the llama.cpp source that the
# pinned llama-cpp-python sdist vendors (the same llama.cpp the quantizer converts and quantizes
# with), so a GGUF the quantizer writes is served by the same code that checked it.
#
#   bash runtime-images/llamacpp/build-llama-server.sh OUT_DIR [SDIST_OR_SRC_DIR]
#
# OUT_DIR gets bin/llama-server (static libllama/libggml; links only libc, libm, libstdc++ and
# libgcc_s, which every Debian base has) and LICENSE. Without SDIST_OR_SRC_DIR the sdist is
# fetched with `pip download` (python3 -m pip, or $PYTHON).
#
# Environment:
#   LLAMA_CPP_VERSION  llama-cpp-python version (default: runtime-images/install-ml-deps.sh's pin)
#   GGML_CUDA          ON for a CUDA build (needs nvcc, e.g. an nvidia/cuda:*-devel base);
#                      CMAKE_CUDA_ARCHITECTURES narrows the GPU targets (default: llama.cpp's list)
#   JOBS               parallel compile jobs (default 2: the shared CI machines have 2 cores)
# CPU flags: GGML_NATIVE=OFF with the x86-64-v3 baseline (AVX2/FMA/F16C), as install-ml-deps.sh
# builds llama-cpp-python, so the binary runs on any machine that runs the quantizer's wheel.
# GGML_OPENMP=OFF: ggml's own thread pool, so the runtime image needs no libgomp.
set -euo pipefail

OUT="${1:?usage: build-llama-server.sh OUT_DIR [SDIST_OR_SRC_DIR]}"
SRC_IN="${2:-}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION="${LLAMA_CPP_VERSION:-}"
if [[ -z "$VERSION" && -f "$HERE/../install-ml-deps.sh" ]]; then
  VERSION="$(sed -n 's/^LLAMA_CPP_VERSION=//p' "$HERE/../install-ml-deps.sh")"
fi
[[ -n "$VERSION" ]] || { echo "build-llama-server: set LLAMA_CPP_VERSION" >&2; exit 2; }
PY="${PYTHON:-python3}"
JOBS="${JOBS:-2}"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
if [[ -d "$SRC_IN" ]]; then
  SRC="$SRC_IN"
else
  if [[ -z "$SRC_IN" ]]; then
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$TMP" "llama-cpp-python==$VERSION"
    SRC_IN="$(ls "$TMP"/llama_cpp_python-*.tar.gz)"
  fi
  tar -xzf "$SRC_IN" -C "$TMP" "llama_cpp_python-$VERSION/vendor/llama.cpp"
  SRC="$TMP/llama_cpp_python-$VERSION/vendor/llama.cpp"
fi
[[ -f "$SRC/tools/server/CMakeLists.txt" ]] || { echo "build-llama-server: no llama.cpp source in $SRC" >&2; exit 2; }

CUDA_ARGS=(-DGGML_CUDA=OFF)
if [[ "${GGML_CUDA:-OFF}" == ON ]]; then
  CUDA_ARGS=(-DGGML_CUDA=ON)
  [[ -n "${CMAKE_CUDA_ARCHITECTURES:-}" ]] && CUDA_ARGS+=("-DCMAKE_CUDA_ARCHITECTURES=$CMAKE_CUDA_ARCHITECTURES")
fi

# No web UI (an API server behind a key; the UI would need npm or a download), no HTTPS (TLS ends
# at the Service mesh / ingress), no tests, examples or the unified app binary.
cmake -S "$SRC" -B "$TMP/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_COMMIT="llama-cpp-python-$VERSION" "${CUDA_ARGS[@]}" >"$TMP/cmake.log" 2>&1 \
  || { tail -n 40 "$TMP/cmake.log" >&2; exit 1; }
cmake --build "$TMP/build" --target llama-server -j "$JOBS" >"$TMP/build.log" 2>&1 \
  || { tail -n 40 "$TMP/build.log" >&2; exit 1; }

mkdir -p "$OUT/bin"
strip -o "$OUT/bin/llama-server.tmp" "$TMP/build/bin/llama-server"
mv "$OUT/bin/llama-server.tmp" "$OUT/bin/llama-server"
cp "$SRC/LICENSE" "$OUT/LICENSE"
"$OUT/bin/llama-server" --version
