#!/usr/bin/env bash
# One-time set-up for the tests (idempotent; README "Tests"). Installs into python3 (or $PYTHON):
#   - requirements-dev.txt (pytest, numpy, safetensors, playwright, comfy-cli),
#   - torch==2.13.0 only when no torch is importable (never replaces an existing torch),
#   - Debian's Chromium for the frontend tests when missing (as root, with apt-get),
# then builds the real ComfyUI installs the integration tests run on (scripts/build_testbeds.sh:
# every version in TESTBED_VERSIONS, under $STAS_TESTBEDS) unless $COMFYUI_PATH names one of your
# own or STAS_BUILD_TESTBEDS=0, and makes sure each testbed's python has pytest and playwright.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/testbeds.sh
PY=${PYTHON:-python3}
quiet() { grep -v -e 'is ignored' -e "Running pip as the 'root' user" || true; }

echo "== python test dependencies -> $($PY -c 'import sys; print(sys.executable)')"
"$PY" -m pip install -q -r requirements-dev.txt 2>&1 | quiet
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "== torch missing: installing torch==2.13.0"
  "$PY" -m pip install -q torch==2.13.0 2>&1 | quiet
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
