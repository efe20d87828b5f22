#!/usr/bin/env bash
# Bring what bench/bench_stas.py needs to a GPU machine without internet access.
#
#   bench/prepare_offline.sh COMFYUI_SRC [PYTHON_VERSION]
#
# COMFYUI_SRC: a ComfyUI checkout, or a bare/mirror git directory (its HEAD is exported).
# Writes, inside the repository (both paths are git-ignored):
#   .comfyui/  the ComfyUI source, without tokenizer data and API nodes (not needed here)
#   .whl/      wheels ComfyUI imports that a plain PyTorch image usually lacks:
#              torchsde + trampoline (k-diffusion samplers) and av (comfy_api's video types)
# On the GPU machine:
#   python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   COMFYUI_PATH=$PWD/.comfyui python3 bench/bench_stas.py --sections op,e2e,mem14b
set -euo pipefail
SRC=${1:?usage: bench/prepare_offline.sh COMFYUI_SRC [PYTHON_VERSION]}
PYV=${2:-3.12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/.comfyui"
rm -rf "$DEST" && mkdir -p "$DEST"
if [ -d "$SRC/.git" ] || [ ! -d "$SRC/objects" ]; then
  cp -r "$SRC"/. "$DEST"/ && rm -rf "$DEST/.git"
else  # bare or mirror git directory: export HEAD, skipping blobs the snapshot lacks
  git --git-dir="$SRC" ls-tree -r HEAD | while read -r _ type obj path; do
    [ "$type" = blob ] || continue
    mkdir -p "$DEST/$(dirname "$path")"
    git --git-dir="$SRC" cat-file blob "$obj" > "$DEST/$path" 2>/dev/null || rm -f "$DEST/$path"
  done
fi
find "$DEST/comfy" -type f -size +100k \( -name "*.json" -o -name "*.txt" -o -name "*.model" \) -delete
rm -rf "$DEST/comfy_api_nodes" "$DEST/tests" "$DEST/tests-unit"
echo "ComfyUI $(grep -o '"[0-9.]*"' "$DEST/comfyui_version.py") -> $DEST ($(du -sh "$DEST" | cut -f1))"
mkdir -p "$ROOT/.whl"
for p in torchsde trampoline av; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$ROOT/.whl" "$p"
done
ls -la "$ROOT/.whl"
