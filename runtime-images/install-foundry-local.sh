#!/usr/bin/env bash
# Installs Microsoft Foundry Local's Python SDK (its runtime in-process: a native library plus
# onnxruntime and onnxruntime-genai-core) into a side virtual environment, pinned:
#   bash runtime-images/install-foundry-local.sh PYTHON
# -> <PYTHON's prefix>/share/slm-foundry-local/2.2.1/venv
#
# A side environment because foundry-local-sdk 2.2.1 pins onnxruntime==1.31.0 while the
# quantizer and the ONNX server pin 1.32.0. tests/quantizer/test_export_foundry_local.py uses it to load an
# exported artifact in Foundry Local's runtime (skipped, naming this script, when it is absent).
# Not part of any image: Foundry Local runs on the device the artifact is handed to.
set -euo pipefail

PY="${1:?usage: install-foundry-local.sh PYTHON}"
VERSION=2.2.1
PINS=(foundry-local-sdk==2.2.1 onnxruntime==1.31.0 onnxruntime-genai-core==0.18.0 numpy==2.4.6
      flatbuffers==25.12.19 protobuf==7.36.2 packaging==26.4 cffi==2.1.1 pycparser==3.12
      pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
      typing_extensions==4.16.0 requests==2.34.2 certifi==2026.10.19.post1 charset-normalizer==3.5.3
      idna==3.20 urllib3==2.8.0 openai==3.57.0 anyio==4.16.0 sniffio==1.3.1 h11==0.16.0
      httpcore2==2.16.2 httpx2==2.16.2 jiter==0.19.0 truststore==0.10.5)
PREFIX="$("$PY" -c 'import sys; print(sys.prefix)')"
DEST="$PREFIX/share/slm-foundry-local/$VERSION/venv"
if [[ -x "$DEST/bin/python" ]] && "$DEST/bin/python" -c "import foundry_local_sdk" 2>/dev/null; then
  echo "foundry-local-sdk $VERSION already in $DEST"
  exit 0
fi
rm -rf "$DEST.tmp"
"$PY" -m venv "$DEST.tmp"
"$DEST.tmp/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${PINS[@]}"
"$DEST.tmp/bin/python" -c "import foundry_local_sdk, onnxruntime; print('foundry-local-sdk ok, onnxruntime', onnxruntime.__version__)"
rm -rf "$DEST" && mkdir -p "$(dirname "$DEST")" && mv "$DEST.tmp" "$DEST"
