#!/usr/bin/env bash
# Installs torch into the virtual environment whose python is $1, before the project (`make install` calls it).
# On a machine without CUDA (no nvidia-smi) it takes the CPU build from PyTorch's own wheel index: the public
# default index gives the CUDA build (about 527 MB plus nvidia-* wheels) even where no GPU exists. When that index
# cannot be reached, it falls back to the default index and says so. On a CUDA machine it installs nothing: the
# project's own range (torch>=2.2) then resolves to the CUDA build.
set -euo pipefail
py=$1
version=${TORCH_VERSION:-2.13.0}
index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

if command -v nvidia-smi >/dev/null 2>&1; then
  echo "torch: nvidia-smi found; the project's dependency installs the CUDA build"
  exit 0
fi
if "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=15)' "$index" 2>/dev/null; then
  echo "torch: no CUDA here; installing the CPU build torch==$version from PyTorch's index $index"
  "$py" -m pip install --quiet "torch==$version" --index-url "$index" --extra-index-url https://pypi.org/simple
else
  echo "torch: no CUDA here, and $index cannot be reached; installing torch==$version from the default index"
  echo "torch: (that is a CPU wheel only where pip is configured with one, as on this project's build machines)"
  "$py" -m pip install --quiet "torch==$version"
fi
