#!/usr/bin/env bash
# Bring what bench/bench_stas.py and bench/workflows_gpu.py need to a GPU machine without
# internet access.
#
#   bench/prepare_offline.sh COMFYUI_SRC [PYTHON_VERSION]
#
# COMFYUI_SRC: a ComfyUI checkout, or a bare/mirror git directory (its HEAD is exported).
# Writes, inside the repository (both paths are git-ignored):
#   .comfyui/  the ComfyUI source, without API nodes and large data files, but with the CLIP
#              tokenizer (sd1_tokenizer/) that the HunyuanVideo workflow's clip_l needs
#   .whl/      wheels ComfyUI imports that a plain PyTorch image usually lacks:
#              torchsde + trampoline (k-diffusion samplers), av (comfy_api's video types and
#              SaveVideo) and comfy-kitchen (fp8-scaled weights in ComfyUI >= 0.8), pinned to
#              the version released with that ComfyUI (COMFY_KITCHEN, default 0.2.5 for 0.8.0)
# On the GPU machine:
#   python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   COMFYUI_PATH=$PWD/.comfyui python3 bench/bench_stas.py --sections op,e2e,mem14b
#   python3 bench/workflows_gpu.py --comfyui .comfyui --prompts .gpu_run/prompts --work /tmp/w --out $OUT
# (.gpu_run/prompts comes from tools/export_api_prompts.py, run here where the frontend is.)
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
find "$DEST/comfy" -type f -size +100k \( -name "*.json" -o -name "*.txt" -o -name "*.model" \) \
  -not -path "*/sd1_tokenizer/*" -delete
rm -rf "$DEST/comfy_api_nodes" "$DEST/tests" "$DEST/tests-unit"
echo "ComfyUI $(grep -o '"[0-9.]*"' "$DEST/comfyui_version.py") -> $DEST ($(du -sh "$DEST" | cut -f1))"
mkdir -p "$ROOT/.whl"
for p in torchsde trampoline av "comfy-kitchen==${COMFY_KITCHEN:-0.2.5}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$ROOT/.whl" "$p"
done
ls -la "$ROOT/.whl"
