#!/usr/bin/env bash
# Build the real ComfyUI installs ("testbeds") the integration tests run on; setup.sh calls it.
#
#   bash scripts/build_testbeds.sh [VERSION ...]      (default: every version in TESTBED_VERSIONS)
#
# Each version becomes $(testbeds_root)/comfyui-<version>/{src,venv}:
#   src   ComfyUI itself, from $STAS_COMFYUI_ARCHIVES/ComfyUI-<version>.tar.gz when that folder
#         is set (offline), else a shallow git clone of tag v<version> from GitHub ($STAS_COMFYUI_REPO);
#   venv  python3 -m venv with ComfyUI's own requirements.txt, pytest and playwright. torch,
#         torchvision and torchaudio come from one shared folder ($(testbeds_root)/torch-*,
#         linked into every venv by a .pth file), installed once from where torch_source
#         (testbeds.sh) says: never a CUDA build on a machine without an NVIDIA GPU.
#
#   bash scripts/build_testbeds.sh --check            where torch would come from; installs nothing
# A testbed whose stamp matches this recipe is left alone, so a second run takes seconds; a
# half-built one is rebuilt. Once all are built it writes their folder to
# ~/.cache/comfyui-stas/testbeds-location, where first_run.py and test.sh look when STAS_TESTBEDS is unset. A version that cannot be built stops the script, naming it and why.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/testbeds.sh

PY=${PYTHON:-python3}
ROOT=$(testbeds_root)
REPO_URL=$COMFYUI_REPO  # testbeds.sh: $STAS_COMFYUI_REPO or GitHub's
quiet() { grep -v -e 'is ignored' -e "Running pip as the 'root' user" -e '^WARNING: Retrying' -e 'already exists. Specify --upgrade' || true; }
fail() { echo "build_testbeds: $*" >&2; exit 1; }

# ComfyUI imports torch, torchvision and torchaudio. From a CPU wheel: PyPI's torchvision and torchaudio (their
# Python only; torchaudio has no 2.13) and triton for the kernels' interpreter tests (PyPI's torch brings it
# otherwise). numpy < 2.4: Triton 3.5's CPU interpreter fails on 2.4.
if [ "${1:-}" = --check ]; then
  src=$(torch_source "$PY") || fail "$(no_cpu_torch_reason)"
  echo "== torch for the testbeds: $src"; exit 0
fi
SOURCE=${STAS_TORCH_SOURCE:-}  # setup.sh passes what its check found
[ -n "$SOURCE" ] || SOURCE=$(torch_source "$PY") || fail "$(no_cpu_torch_reason)"
case $SOURCE in
  cpu-wheel) DEFAULT_PINS="$CPU_TORCH torchvision==0.28.0 torchaudio==2.11.1 triton==3.7.1 pillow numpy<2.4" ;;
  index|pypi) DEFAULT_PINS="torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1 numpy<2.4" ;;
  *) fail "STAS_TORCH_SOURCE=$SOURCE is not one of index, cpu-wheel, pypi (unset it to let set-up choose)" ;;
esac
TORCH_PINS=${STAS_TORCH_PINS:-$DEFAULT_PINS}

mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
LAYER="$ROOT/torch-$(echo "$SOURCE $TORCH_PINS" | tr -c 'A-Za-z0-9.\n' '_' | tr -s '_' | sed 's/_$//')"

build_torch_layer() {
  [ -f "$LAYER/.stamp" ] && [ "$(cat "$LAYER/.stamp")" = "$SOURCE $TORCH_PINS" ] && return 0
  echo "== torch for every testbed ($SOURCE): $TORCH_PINS -> $LAYER"
  local t0=$SECONDS
  rm -rf "$LAYER" "$LAYER.tmp"
  local pins=($TORCH_PINS) index=() torch_pins=() rest=() p
  [ "$SOURCE" = index ] && index=(--extra-index-url "$TORCH_CPU_INDEX")
  if [ "$SOURCE" = cpu-wheel ]; then  # these three without their dependencies (PyPI's torch, a CUDA build)
    for p in "${pins[@]}"; do case $p in torchvision*|torchaudio*|triton*) rest+=("$p") ;; *) torch_pins+=("$p") ;; esac; done
  else
    torch_pins=("${pins[@]}")
  fi
  "$PY" -m pip install -q --no-compile --target "$LAYER.tmp" "${index[@]}" --timeout 30 --retries 1 "${torch_pins[@]}" \
    2>&1 | quiet || fail "pip could not install ${torch_pins[*]} (see above; STAS_TORCH_PINS picks other versions)"
  if [ "${#rest[@]}" -gt 0 ]; then
    "$PY" -m pip install -q --no-compile --no-deps --target "$LAYER.tmp" --timeout 30 --retries 1 "${rest[@]}" \
      2>&1 | quiet || fail "pip could not install ${rest[*]} (see above; STAS_TORCH_PINS picks other versions)"
    # Their compiled ops link CUDA and cannot load beside a CPU torch; without them torchaudio imports
    # as designed and torchvision with the two op schemas torch_layer_cpu.py defines.
    rm -rf "$LAYER.tmp"/torchvision/*.so "$LAYER.tmp"/torchvision.libs "$LAYER.tmp"/torchaudio/lib/*.so
    cp scripts/torch_layer_cpu.py "$LAYER.tmp/comfyui_stas_torch_layer.py"
  fi
  if [ "$SOURCE" != pypi ] && ls "$LAYER.tmp" | grep -iE '(cuda|nvidia).*\.dist-info$'; then
    fail "the torch for a machine without a GPU ($TORCH_PINS) brought the CUDA packages above"
  fi
  local probe="import torch, torchvision, torchaudio"
  [ -f "$LAYER.tmp/comfyui_stas_torch_layer.py" ] && probe="import comfyui_stas_torch_layer; $probe"
  PYTHONPATH="$LAYER.tmp" "$PY" -c "$probe" \
    || fail "torch ($TORCH_PINS) installed into $LAYER.tmp but does not import (see above)"
  echo "$SOURCE $TORCH_PINS" > "$LAYER.tmp/.stamp"
  mv "$LAYER.tmp" "$LAYER"
  echo "== torch installed in $((SECONDS - t0)) s"
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

recipe_of() { echo "comfyui $1; $SOURCE $TORCH_PINS; $(basename "$LAYER")"; }
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
  [ -f "$LAYER/comfyui_stas_torch_layer.py" ] && echo "import comfyui_stas_torch_layer" >> "$site/comfyui_stas_torch.pth"
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
  echo "== testbed comfyui-$v: installed in $((SECONDS - t0)) s; its start-up check runs beside the next one"
  start_up_check "$v" &
  checks+=($!)
}

# ComfyUI's own start-up check (server, frontend, every core node), with its state in a temp folder; the
# stamp that marks a testbed built is written only when it passes.
start_up_check() {
  local v=$1 dir="$ROOT/comfyui-$1" base
  base=$(mktemp -d)
  if (cd "$dir/src" && "$dir/venv/bin/python" -B main.py --cpu --quick-test-for-ci --disable-all-custom-nodes \
        --base-directory "$base" > "$base.log" 2>&1); then
    recipe_of "$v" > "$dir/.stamp"
    rm -rf "$base" "$base.log"
    return 0
  fi
  tail -n 30 "$base.log" >&2
  rm -rf "$base" "$base.log"
  echo "build_testbeds: ComfyUI $v: built, but 'main.py --quick-test-for-ci' fails on the CPU (its log is above)" >&2
  return 1
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
checks=()
t_all=$SECONDS
for v in "${versions[@]}"; do build_testbed "$v"; done
bad=0
for pid in "${checks[@]}"; do wait "$pid" || bad=1; done
[ "$bad" = 0 ] || exit 1
# Where they are, for first_run.py and test.sh when STAS_TESTBEDS is not set again (testbeds.sh, found_testbeds_root).
mkdir -p "$(dirname "$(testbeds_record)")" && echo "$ROOT" > "$(testbeds_record)" \
  || echo "build_testbeds: could not write $(testbeds_record); set STAS_TESTBEDS=$ROOT to use these testbeds" >&2
[ "${#checks[@]}" = 0 ] || echo "== testbeds built, start-up checks passed: $((SECONDS - t_all)) s"
# A shared torch folder that no testbed uses any more (its pins changed) is removed.
for old in "$ROOT"/torch-*/; do
  old=${old%/}
  [ "$old" = "$LAYER" ] && continue
  grep -qsxF "$old" "$ROOT"/comfyui-*/venv/lib/python*/site-packages/comfyui_stas_torch.pth || rm -rf "$old"
done
