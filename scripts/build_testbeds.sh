#!/usr/bin/env bash
# Build the real ComfyUI installs ("testbeds") the integration tests run on; setup.sh calls it.
#
#   bash scripts/build_testbeds.sh [VERSION ...]      (default: every version in TESTBED_VERSIONS)
#
# Each version becomes $(testbeds_root)/comfyui-<version>/{src,venv}:
#   src   ComfyUI itself, from $STAS_COMFYUI_ARCHIVES/ComfyUI-<version>.tar.gz when that folder
#         is set (offline), else a shallow git clone of tag v<version> from GitHub;
#   venv  python3 -m venv with ComfyUI's own requirements.txt, pytest and playwright. torch,
#         torchvision and torchaudio come from one shared folder ($(testbeds_root)/torch-*,
#         linked into every venv by a .pth file), installed once: the CPU builds from the PyTorch
#         CPU index where that is reachable, else what pip finds ($STAS_TORCH_PINS overrides
#         the versions).
# A testbed whose stamp matches this recipe is left alone, so a second run takes seconds; a
# half-built one is rebuilt. A version that cannot be built stops the script, naming it and why.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/testbeds.sh

PY=${PYTHON:-python3}
ROOT=$(testbeds_root)
# torch 2.9 is the newest release with a torchaudio on PyPI beside a torchvision (ComfyUI imports all three);
# numpy < 2.4 because Triton 3.5's CPU interpreter (the kernels' tests) fails on numpy 2.4.
TORCH_PINS=${STAS_TORCH_PINS:-"torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1 numpy<2.4"}
TORCH_CPU_INDEX=${STAS_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
REPO_URL=https://github.com/comfyanonymous/ComfyUI.git
quiet() { grep -v -e 'is ignored' -e "Running pip as the 'root' user" -e '^WARNING: Retrying' || true; }
fail() { echo "build_testbeds: $*" >&2; exit 1; }

mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
LAYER="$ROOT/torch-$(echo "$TORCH_PINS" | tr -c 'A-Za-z0-9.\n' '_' | tr -s '_' | sed 's/_$//')"

build_torch_layer() {
  [ -f "$LAYER/.stamp" ] && [ "$(cat "$LAYER/.stamp")" = "$TORCH_PINS" ] && return 0
  echo "== torch for every testbed: $TORCH_PINS -> $LAYER"
  rm -rf "$LAYER" "$LAYER.tmp"
  local index=(--extra-index-url "$TORCH_CPU_INDEX")
  if ! "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip('/') + '/torch/', timeout=15)" \
      "$TORCH_CPU_INDEX" 2>/dev/null; then
    index=()
    if ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then
      # PyPI has CUDA builds only of torch / torchvision / torchaudio for Linux x86_64: ComfyUI needs all three.
      [ "${STAS_REQUIRE_CPU_TORCH:-0}" = 1 ] && fail "no NVIDIA GPU here and $TORCH_CPU_INDEX is unreachable, so only CUDA builds of torch could be installed (STAS_REQUIRE_CPU_TORCH=1); set STAS_TORCH_INDEX to a reachable CPU index or mirror"
      echo "== WARNING: no NVIDIA GPU, but the CPU index $TORCH_CPU_INDEX is unreachable: pip takes PyPI's torch, a CUDA build (about 6.7 GB with its nvidia-* libraries). STAS_TORCH_INDEX=<a CPU index or mirror> avoids it; STAS_REQUIRE_CPU_TORCH=1 stops here instead."
    fi
  fi
  # shellcheck disable=SC2086
  if ! "$PY" -m pip install -q --no-compile --target "$LAYER.tmp" "${index[@]}" \
      --timeout 30 --retries 1 $TORCH_PINS 2>&1 | quiet; then
    fail "pip could not install $TORCH_PINS (see above; STAS_TORCH_PINS picks other versions)"
  fi
  PYTHONPATH="$LAYER.tmp" "$PY" -c "import torch, torchvision, torchaudio" \
    || fail "torch ($TORCH_PINS) installed into $LAYER.tmp but does not import (see above)"
  echo "$TORCH_PINS" > "$LAYER.tmp/.stamp"
  mv "$LAYER.tmp" "$LAYER"
}

fetch_source() {  # fetch_source VERSION DEST: ComfyUI <VERSION> unpacked into DEST
  local v=$1 dest=$2 tmp
  tmp=$(mktemp -d "$ROOT/.src-$v.XXXXXX")
  if [ -n "${STAS_COMFYUI_ARCHIVES:-}" ]; then
    local archive="$STAS_COMFYUI_ARCHIVES/ComfyUI-$v.tar.gz"
    [ -f "$archive" ] || { rm -rf "$tmp"; fail "ComfyUI $v: $archive is missing (STAS_COMFYUI_ARCHIVES=$STAS_COMFYUI_ARCHIVES; unset it to clone from GitHub instead)"; }
    tar -xzf "$archive" -C "$tmp" || { rm -rf "$tmp"; fail "ComfyUI $v: cannot unpack $archive"; }
    [ -f "$tmp/ComfyUI-$v/main.py" ] || { rm -rf "$tmp"; fail "ComfyUI $v: $archive has no ComfyUI-$v/main.py"; }
    mv "$tmp/ComfyUI-$v" "$dest"
  else
    git clone -q --depth 1 --branch "v$v" "$REPO_URL" "$tmp/src" 2>&1 \
      || { rm -rf "$tmp"; fail "ComfyUI $v: git clone of tag v$v from $REPO_URL failed (offline? set STAS_COMFYUI_ARCHIVES to a folder of ComfyUI-<version>.tar.gz archives)"; }
    rm -rf "$tmp/src/.git"
    mv "$tmp/src" "$dest"
  fi
  rm -rf "$tmp"
}

recipe_of() { echo "comfyui $1; $TORCH_PINS; $(basename "$LAYER")"; }
is_built() { [ -f "$ROOT/comfyui-$1/.stamp" ] && [ "$(cat "$ROOT/comfyui-$1/.stamp")" = "$(recipe_of "$1")" ] \
             && [ -x "$ROOT/comfyui-$1/venv/bin/python" ]; }

build_testbed() {  # build_testbed VERSION
  local v=$1 dir="$ROOT/comfyui-$1"
  if is_built "$v"; then
    echo "== testbed comfyui-$v: ready ($dir)"
    return 0
  fi
  local t0=$SECONDS
  echo "== testbed comfyui-$v: building in $dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  fetch_source "$v" "$dir/src"
  "$PY" -m venv "$dir/venv" || fail "ComfyUI $v: python3 -m venv failed (Debian: apt-get install python3-venv)"
  local vpy="$dir/venv/bin/python" site
  site=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$LAYER" > "$site/comfyui_stas_torch.pth"
  # ComfyUI's requirements less torch/torchvision/torchaudio (the shared folder has them and numpy:
  # the constraints keep pip from fetching others) and its optional GL extras.
  grep -v -E '^\s*(#|$)|^torch(vision|audio)?\s*$|PyOpenGL|comfy-angle' "$dir/src/requirements.txt" > "$dir/requirements.txt"
  "$vpy" -c 'import numpy, torch, torchvision, torchaudio as a; [print(m.__name__, m.__version__.partition("+")[0], sep="==") for m in (numpy, torch, torchvision, a)]' \
    > "$dir/constraints.txt" || fail "ComfyUI $v: the shared torch in $LAYER does not import in the venv"
  # requests: ComfyUI's frontend manager imports it, but 0.3.64's requirements.txt does not list it.
  if ! "$vpy" -m pip install -q --no-compile -r "$dir/requirements.txt" -c "$dir/constraints.txt" requests pytest playwright \
      2>&1 | quiet; then
    fail "ComfyUI $v: pip could not install its requirements (see above)"
  fi
  # ComfyUI's own start-up check (server, frontend, every core node), with its state in a temp folder.
  local base
  base=$(mktemp -d)
  if ! (cd "$dir/src" && "$vpy" -B main.py --cpu --quick-test-for-ci --disable-all-custom-nodes \
          --base-directory "$base" > "$base.log" 2>&1); then
    tail -n 30 "$base.log" >&2
    rm -rf "$base" "$base.log"
    fail "ComfyUI $v: built, but 'main.py --quick-test-for-ci' fails on the CPU (its log is above)"
  fi
  rm -rf "$base" "$base.log"
  recipe_of "$v" > "$dir/.stamp"
  echo "== testbed comfyui-$v: built in $((SECONDS - t0)) s"
}

versions=("$@")
[ "${#versions[@]}" -gt 0 ] || versions=("${TESTBED_VERSIONS[@]}")
# Every missing archive is named before anything slow starts.
if [ -n "${STAS_COMFYUI_ARCHIVES:-}" ]; then
  missing=()
  for v in "${versions[@]}"; do
    is_built "$v" || [ -f "$STAS_COMFYUI_ARCHIVES/ComfyUI-$v.tar.gz" ] || missing+=("ComfyUI-$v.tar.gz")
  done
  [ "${#missing[@]}" = 0 ] || fail "STAS_COMFYUI_ARCHIVES=$STAS_COMFYUI_ARCHIVES lacks ${missing[*]} (unset it to clone from GitHub instead)"
fi
build_torch_layer
for v in "${versions[@]}"; do build_testbed "$v"; done
# A shared torch folder that no testbed uses any more (its pins changed) is removed.
for old in "$ROOT"/torch-*/; do
  old=${old%/}
  [ "$old" = "$LAYER" ] && continue
  grep -qsxF "$old" "$ROOT"/comfyui-*/venv/lib/python*/site-packages/comfyui_stas_torch.pth || rm -rf "$old"
done
