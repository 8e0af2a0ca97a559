#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a GPU session's `device run`: the GPU machine has PyTorch,
# Lightning, SciPy, scikit-image, pandas and tifffile but no MONAI and no network, so MONAI's wheel
# travels in .whl/ (ignored by git; name it in the call's carry: [".whl"]). gpu_train.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(python3 -c "import monai; print(monai.__version__)" 2>/dev/null || echo 1.6.1)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d .whl "monai==$version"
ls -l .whl
