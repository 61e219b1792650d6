#!/usr/bin/env bash
# tensorrt-stubs (type stubs of TensorRT's Python API, a real wheel on PyPI) under
# build/typestubs for mypy only — never in the runtime venv, where its .pyi-only
# `tensorrt` package would import as an empty namespace. No dependencies: its
# dependency `tensorrt` downloads from NVIDIA at install time. The generated stubs
# name some parameters `in` (a Python keyword: a syntax error for mypy), renamed `in_`,
# and put a parameter without a default after defaulted ones (add_scale_nd), given one.
set -euo pipefail
dest=${1:-build/typestubs}
version=${TENSORRT_STUBS_VERSION:-10.13.0.35.1}
marker="$dest/.tensorrt-stubs-$version"
if [[ -f $marker ]]; then echo "$dest"; exit 0; fi
pip=(${PIP:-.venv/bin/pip})
rm -rf "$dest"
"${pip[@]}" install -q --no-deps --target "$dest" "tensorrt-stubs==$version" >/dev/null
find "$dest" -name '*.pyi' -exec sed -i -E -e 's/([(,] ?)in: /\1in_: /g' \
  -e 's/(power: Weights = None, channel_axis: int)\)/\1 = ...)/' {} +
touch "$marker"
echo "$dest"
