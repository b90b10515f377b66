#!/usr/bin/env bash
# Build fxexport_infer against the libtorch inside the installed torch wheel.
#
#   scripts/cpp/build.sh [OUTPUT]        (default: build/cpp/fxexport_infer)
#
# PYTHON picks the interpreter whose torch to use (default: .venv/bin/python if
# present, else python3); CXX the compiler (default g++). A plain compiler line,
# because find_package(Torch) refuses a CUDA wheel without a CUDA toolkit; with a
# CPU torch or a libtorch download, CMakeLists.txt beside this script does the same.
# `fxexport cpp-example` (or python -m fxexport.cpp) builds the same program into a
# cache folder and rebuilds only when the sources, the compiler or torch change.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/build/cpp/fxexport_infer}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
CXX="${CXX:-g++}"
read -r torch_dir abi < <("$PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__), int(torch.compiled_with_cxx11_abi()))')
mkdir -p "$(dirname "$out")"
set -x
"$CXX" -O2 -std=c++20 -D_GLIBCXX_USE_CXX11_ABI="$abi" \
  -I "$torch_dir/include" -I "$torch_dir/include/torch/csrc/api/include" \
  "$here/fxexport_infer.cpp" -o "$out" \
  -L "$torch_dir/lib" -Wl,-rpath,"$torch_dir/lib" -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10
