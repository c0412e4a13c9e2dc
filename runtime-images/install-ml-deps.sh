#!/usr/bin/env bash
# Installs the heavy ML stack of the runtime images into a given Python, pinned:
#   bash runtime-images/install-ml-deps.sh PYTHON [--cuda]
#
# CPU (default; the Makefile, CI and the CPU images): PyPI's Linux torch wheel is linked
# against CUDA and pulls several GB of nvidia-* wheels. We install it with --no-deps plus
# its small pure-Python dependencies, then torch_cuda_stubs.py builds a tiny stub library
# under the missing CUDA sonames so `import torch` works and torch.cuda.is_available() is
# False. --cuda (the CUDA quantizer image, AWQ/GPTQ): torch with its CUDA wheels, plus
# llm-compressor.
#
# llama-cpp-python compiles llama.cpp (~3 min on 2 cores). pip keeps the built wheel in its
# cache, so keep CMAKE_ARGS fixed (the cache key ignores them) and never pass
# --no-cache-dir: a warm cache makes a rerun take seconds. The sdist also carries llama.cpp's
# HF->GGUF converter, which the quantizer needs; it is extracted to
# <prefix>/share/slm-llama-cpp/<version>/ (found again by slm_quantizer.gguf).
set -euo pipefail

PY="${1:?usage: install-ml-deps.sh PYTHON [--cuda]}"
FLAVOUR="${2:-cpu}"
HERE="$(cd "$(dirname "$0")" && pwd)"

TORCH=torch==2.13.0
LLAMA_CPP_VERSION=0.3.36
# torch's runtime dependencies (the CUDA ones left out on purpose).
TORCH_DEPS=(filelock==4.3.1 typing-extensions==4.16.0 sympy==1.14.0 mpmath==1.3.0
            networkx==3.6.1 jinja2==3.1.6 markupsafe==3.0.4 fsspec==2026.9.0 setuptools==80.9.0)
ML=(numpy==2.4.6 transformers==5.24.0 tokenizers==0.23.3 safetensors==0.8.0
    regex==2026.11.19 onnx==1.23.2 onnx-ir==1.1.0 ml-dtypes==0.6.0 protobuf==7.36.2
    onnxruntime==1.32.0 onnxruntime-genai==0.18.0 gguf==0.19.0 sentencepiece==0.2.3
    diskcache==5.6.3 boto3==1.44.5 "llama-cpp-python==${LLAMA_CPP_VERSION}")
# Olive (onnx tool olive: its Gptq pass) and MLX (format mlx: mlx-lm on mlx-cpu), installed with
# --no-deps and their runtime dependencies listed here: olive-ai and torchmetrics depend on
# torch, and letting pip resolve that would pull the CUDA wheels back in (see above).
EXPORT=(olive-ai==0.13.0 onnxscript==0.7.2 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2
        opentelemetry-semantic-conventions==0.66b2 optuna==5.0.0 pandas==3.1.1 questionary==2.1.1
        prompt_toolkit==3.0.53 wcwidth==0.9.4 torchmetrics==1.9.0 lightning-utilities==0.15.3
        alembic==1.20.1 Mako==1.4.3 SQLAlchemy==2.1.9 colorlog==6.12.0
        mlx==0.32.4 mlx-cpu==0.32.4 mlx-lm==0.32.2)
# x86-64-v3 baseline instead of -march=native: the cached wheel must run on any CI machine.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

if [[ "$FLAVOUR" == "--cuda" ]]; then
  pip_install "$TORCH" "${TORCH_DEPS[@]}"
  pip_install "${ML[@]}" llmcompressor==0.14.0.1
else
  if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${TORCH#torch==}')" 2>/dev/null; then
    pip_install --no-deps "$TORCH"
    pip_install "${TORCH_DEPS[@]}"
    TORCH_DIR="$("$PY" -c 'import importlib.util as u; print(u.find_spec("torch").submodule_search_locations[0])')"
    "$PY" "$HERE/common/torch_cuda_stubs.py" "$TORCH_DIR"
  fi
  pip_install "${TORCH_DEPS[@]}" "${ML[@]}"
fi
pip_install --no-deps "${EXPORT[@]}"

# llama.cpp's converter (convert_hf_to_gguf.py, its conversion/ package and gguf-py).
PREFIX="$("$PY" -c 'import sys; print(sys.prefix)')"
CONVERT_DIR="$PREFIX/share/slm-llama-cpp/$LLAMA_CPP_VERSION"
if [[ ! -f "$CONVERT_DIR/convert_hf_to_gguf.py" ]]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$TMP" "llama-cpp-python==${LLAMA_CPP_VERSION}"
  SRC="llama_cpp_python-${LLAMA_CPP_VERSION}/vendor/llama.cpp"
  tar -xzf "$TMP"/llama_cpp_python-*.tar.gz -C "$TMP" \
      "$SRC/convert_hf_to_gguf.py" "$SRC/conversion" "$SRC/gguf-py" "$SRC/LICENSE"
  mkdir -p "$(dirname "$CONVERT_DIR")"
  rm -rf "$CONVERT_DIR.tmp" && mv "$TMP/$SRC" "$CONVERT_DIR.tmp" && mv "$CONVERT_DIR.tmp" "$CONVERT_DIR"
fi

"$PY" - <<'EOF'
import importlib.metadata as md
import torch, transformers, onnxruntime_genai, llama_cpp, olive, mlx_lm  # noqa: F401  (import check)
names = ["torch", "transformers", "tokenizers", "onnxruntime", "onnxruntime-genai", "llama-cpp-python", "gguf",
         "olive-ai", "mlx", "mlx-lm"]
print("ml deps ok:", ", ".join(f"{n}=={md.version(n)}" for n in names), "| cuda:", torch.cuda.is_available())
EOF
