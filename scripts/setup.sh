#!/usr/bin/env bash
# One-time set-up for the tests (idempotent; README "Tests"). Installs into python3 (or $PYTHON):
#   - requirements-dev.txt (pytest, numpy, safetensors, playwright, comfy-cli),
#   - torch 2.13.0 only when no torch is importable (never replaces an existing torch; CPU build without a GPU),
#   - Debian's Chromium for the frontend tests when missing (as root, with apt-get),
# then builds the real ComfyUI installs the integration tests run on (scripts/build_testbeds.sh:
# every version in TESTBED_VERSIONS, under $STAS_TESTBEDS) unless $COMFYUI_PATH names one of your
# own or STAS_BUILD_TESTBEDS=0, and makes sure each testbed's python has pytest and playwright.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/testbeds.sh
PY=${PYTHON:-python3}
quiet() { grep -v -e 'is ignored' -e "Running pip as the 'root' user" || true; }

# -- prerequisites (issue 23): everything set-up needs is checked before anything is installed.
need() { echo "setup: $*" >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
  || need "$PY is missing or older than Python 3.10 (set PYTHON to a python3.10+)"
"$PY" -m pip --version >/dev/null 2>&1 || need "$PY has no pip (Debian: apt-get install python3-pip)"
if [ -z "${COMFYUI_PATH:-}" ] && [ "${STAS_BUILD_TESTBEDS:-1}" != 0 ]; then
  "$PY" -c 'import venv, ensurepip' 2>/dev/null || need "$PY cannot make virtual environments (Debian: apt-get install python3-venv)"
  unbuilt=()
  for v in "${TESTBED_VERSIONS[@]}"; do [ -f "$(testbeds_root)/comfyui-$v/.stamp" ] || unbuilt+=("$v"); done
  if [ -n "${STAS_COMFYUI_ARCHIVES:-}" ]; then
    lacking=()
    for v in "${unbuilt[@]}"; do [ -f "$STAS_COMFYUI_ARCHIVES/ComfyUI-$v.tar.gz" ] || lacking+=("ComfyUI-$v.tar.gz"); done
    [ "${#lacking[@]}" = 0 ] || need "STAS_COMFYUI_ARCHIVES=$STAS_COMFYUI_ARCHIVES lacks ${lacking[*]} (unset it to clone from GitHub instead); nothing was installed"
  elif [ "${#unbuilt[@]}" -gt 0 ]; then
    archives_fix="set STAS_COMFYUI_ARCHIVES=<folder of ComfyUI-<version>.tar.gz> (GitHub's release archives of ComfyUI v<version>, which unpack to ComfyUI-<version>/)"
    command -v git >/dev/null || need "ComfyUI ${unbuilt[*]} must be cloned, but git is missing; install git or $archives_fix; nothing was installed"
    # Reach the repository before installing anything (issue 31): without it set-up would stop at the first clone.
    echo "== ComfyUI ${unbuilt[*]}: checking that $COMFYUI_REPO can be cloned"
    if ! lacking=$(comfyui_repo_lacks "${unbuilt[@]}"); then
      need "ComfyUI ${unbuilt[*]} must be cloned, but $COMFYUI_REPO cannot be reached (git ls-remote failed or took over ${STAS_GIT_TIMEOUT:-30} s: offline, or a proxy?); $archives_fix; nothing was installed"
    fi
    [ -z "$lacking" ] || need "$COMFYUI_REPO has no tag for ComfyUI $(echo $lacking) (v<version>); $archives_fix; nothing was installed"
  fi
  if [ "${#unbuilt[@]}" -gt 0 ]; then
    free_dir=$(testbeds_root); while [ ! -d "$free_dir" ]; do free_dir=$(dirname "$free_dir"); done
    free_gb=$(df -Pk "$free_dir" | awk 'NR == 2 {print int($4 / 1048576)}')
    [ "${free_gb:-0}" -ge "${STAS_MIN_FREE_GB:-8}" ] \
      || need "$(testbeds_root) has ${free_gb} GB free; building ComfyUI ${unbuilt[*]} needs about ${STAS_MIN_FREE_GB:-8} GB (STAS_TESTBEDS picks another place); nothing was installed"
  fi
fi
# torch: never a CUDA build on a machine without an NVIDIA GPU (testbeds.sh, torch_source).
need_torch=0
"$PY" -c "import torch" 2>/dev/null || need_torch=1
if [ "$need_torch" = 1 ] || { [ -z "${COMFYUI_PATH:-}" ] && [ "${STAS_BUILD_TESTBEDS:-1}" != 0 ]; }; then
  STAS_TORCH_SOURCE=$(torch_source "$PY") || need "$(no_cpu_torch_reason); nothing was installed"
  export STAS_TORCH_SOURCE
fi

echo "== python test dependencies -> $($PY -c 'import sys; print(sys.executable)')"
"$PY" -m pip install -q -r requirements-dev.txt 2>&1 | quiet
if [ "$need_torch" = 1 ]; then
  if has_nvidia_gpu || [ "$STAS_TORCH_SOURCE" = pypi ]; then torch_args=(torch==2.13.0)
  elif [ "$STAS_TORCH_SOURCE" = index ]; then torch_args=(--extra-index-url "$TORCH_CPU_INDEX" "$CPU_TORCH")
  else torch_args=("$CPU_TORCH"); fi
  echo "== torch missing: installing ${torch_args[*]: -1}"
  "$PY" -m pip install -q "${torch_args[@]}" 2>&1 | quiet
fi

if [ -x /usr/bin/chromium ]; then
  echo "== chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing Debian's chromium (frontend tests)"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium >/dev/null
else
  echo "== chromium missing and not root: frontend tests will skip (sudo apt-get install chromium)"
fi

if [ -n "${COMFYUI_PATH:-}" ]; then
  echo "== COMFYUI_PATH=$COMFYUI_PATH: testing that ComfyUI only (no testbeds built)"
elif [ "${STAS_BUILD_TESTBEDS:-1}" = 0 ]; then
  echo "== STAS_BUILD_TESTBEDS=0: no ComfyUI testbeds built"
else
  bash scripts/build_testbeds.sh
fi

found=0
while IFS=$'\t' read -r name src tpy; do
  [ -n "$name" ] || continue
  found=1
  echo "== testbed $name ($src): pytest + playwright -> $tpy"
  "$tpy" -c "import pytest, playwright" 2>/dev/null || "$tpy" -m pip install -q pytest playwright 2>&1 | quiet
done < <(find_testbeds)
[ "$found" = 1 ] || echo "== no ComfyUI testbed: $(no_testbed_reason); integration tests will skip"

# -- ComfyUI-GGUF (issue 19): unpacked from $STAS_THIRDPARTY/ComfyUI-GGUF-<commit>.tar.gz (default
# -- ../shared/thirdparty beside the checkout, as .ci/run finds ../shared/comfyui) into each testbed's
# -- src/custom_nodes/, and `gguf` into its venv. Never into a ComfyUI of your own ($COMFYUI_PATH).
gguf_archive=$(ls "${STAS_THIRDPARTY:-../shared/thirdparty}"/ComfyUI-GGUF-*.tar.gz 2>/dev/null | sort | tail -n 1 || true)
if [ -n "${COMFYUI_PATH:-}" ]; then
  echo "== ComfyUI-GGUF: not installed into COMFYUI_PATH (its tests run if $COMFYUI_PATH/custom_nodes/ComfyUI-GGUF exists)"
elif [ -z "$gguf_archive" ]; then
  echo "== ComfyUI-GGUF: no ComfyUI-GGUF-*.tar.gz in ${STAS_THIRDPARTY:-../shared/thirdparty} (set STAS_THIRDPARTY): its tests will skip (fail under CI)"
else
  while IFS=$'\t' read -r name src tpy; do
    [ -n "$name" ] || continue
    dest="$src/custom_nodes/ComfyUI-GGUF"
    if [ "$(cat "$dest/.stas-archive" 2>/dev/null)" != "$(basename "$gguf_archive")" ]; then
      echo "== testbed $name: ComfyUI-GGUF <- $gguf_archive"
      rm -rf "$dest" && mkdir -p "$src/custom_nodes" && tar -xzf "$gguf_archive" -C "$src/custom_nodes" \
        && basename "$gguf_archive" > "$dest/.stas-archive" || echo "== testbed $name: could not unpack $gguf_archive"
    fi
    "$tpy" -c "import gguf" 2>/dev/null || "$tpy" -m pip install -q 'gguf>=0.13.0' 2>&1 | quiet
  done < <(find_testbeds)
fi

# -- newer frontend (issue 23): the browser tests also run comfyui-frontend-package 1.58 on the
# -- newest testbed (--front-end-root; stas_harness/server.py EXTRA_FRONTENDS); wheel only, no deps.
if [ -z "${COMFYUI_PATH:-}" ] && [ "${STAS_BUILD_TESTBEDS:-1}" != 0 ]; then
  fe="$(testbeds_root)/frontend-1.58"
  if [ -f "$fe/comfyui_frontend_package/static/index.html" ]; then
    echo "== frontend 1.58: $fe"
  else
    echo "== frontend 1.58 -> $fe"
    rm -rf "$fe.tmp" && "$PY" -m pip install -q --no-deps --target "$fe.tmp" 'comfyui-frontend-package==1.58.*' 2>&1 | quiet || true
    if [ -f "$fe.tmp/comfyui_frontend_package/static/index.html" ]; then mv "$fe.tmp" "$fe"; else
      rm -rf "$fe.tmp"; echo "== frontend 1.58 could not be installed: its browser tests will skip"; fi
  fi
fi
echo "== set-up done"
