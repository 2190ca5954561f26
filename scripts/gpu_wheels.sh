#!/usr/bin/env bash
# Wheels for the GPU machine (`make bench-gpu`): it has PyTorch, torchvision, OpenCV, NumPy, Pillow,
# safetensors, onnx and onnxruntime, and reaches no package registry, so what else the benchmark imports
# travels as wheels in .whl/ (git-ignored), for its Python 3.12 on x86-64. Run here, in the repository root:
#     bash scripts/gpu_wheels.sh            # the default list below
#     bash scripts/gpu_wheels.sh NAME==VERSION ...
# pycocotools: sparseinst_core.data.synthetic (the demo scenes) imports it; its only requirement, numpy,
# is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
    packages=(pycocotools==2.0.11)
fi
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "${packages[@]}"
ls -l .whl
