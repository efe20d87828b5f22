# Sourced by setup.sh and test.sh: finds the real ComfyUI installs ("testbeds") to test against.
#
#   $COMFYUI_PATH set    -> that one ComfyUI, run by $COMFYUI_PYTHON, else a venv beside or inside
#                           it (../venv, ./venv, ./.venv, ../.venv), else python3.
#   $COMFYUI_PATH unset  -> every comfyui-*/ that has src/main.py and venv/bin/python, under
#                           $STAS_TESTBEDS, else where build_testbeds.sh last built them (recorded in
#                           $HOME/.cache/comfyui-stas/testbeds-location), else ~/.cache/comfyui-stas/testbeds.
#
# find_testbeds prints one line per testbed: NAME<TAB>SRC<TAB>PYTHON.
# Keep in sync with stas_harness/server.py (comfy_python_for), which resolves the same python.

# The ComfyUI versions the pack supports and tests against, oldest first. setup.sh builds one
# testbed per version; pyproject's requires-comfyui names the first (tests/test_packaging.py).
TESTBED_VERSIONS=(0.3.64 0.8.0 0.33.0)
# Where build_testbeds.sh clones ComfyUI from when $STAS_COMFYUI_ARCHIVES has no archive of it.
COMFYUI_REPO=${STAS_COMFYUI_REPO:-https://github.com/comfyanonymous/ComfyUI.git}
# comfyui_repo_lacks VERSION...: prints the versions whose tag v<VERSION> $COMFYUI_REPO lacks, all of them
# when it cannot be reached within ${STAS_GIT_TIMEOUT:-30} s; returns 1 when it cannot be reached.
comfyui_repo_lacks() {
  local refs v
  refs=$(GIT_TERMINAL_PROMPT=0 timeout "${STAS_GIT_TIMEOUT:-30}" git ls-remote --tags "$COMFYUI_REPO" 2>/dev/null) \
    || { echo "$*"; return 1; }
  for v in "$@"; do grep -q "refs/tags/v$v\$" <<< "$refs" || echo "$v"; done
  return 0
}

# Where the testbeds' shared torch comes from; build_testbeds.sh prints it with --check, before installing
# anything. A machine without an NVIDIA GPU never gets a CUDA build of torch unless STAS_ALLOW_CUDA_TORCH=1:
#   index      the PyTorch CPU index $STAS_TORCH_INDEX is reachable: CPU builds of torch, torchvision, torchaudio;
#   cpu-wheel  pip finds $CPU_TORCH (a local wheel, PIP_FIND_LINKS, a mirror): torchvision and torchaudio come
#              from PyPI without their compiled extensions, which link CUDA (scripts/torch_layer_cpu.py);
#   pypi       an NVIDIA GPU is here, or STAS_ALLOW_CUDA_TORCH=1: PyPI's builds, CUDA ones on Linux x86_64.
TORCH_CPU_INDEX=${STAS_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
CPU_TORCH="torch==2.13.0+cpu"
torch_source() {  # torch_source PYTHON: prints index, cpu-wheel or pypi; returns 1 when none may be used
  local py=$1 tmp
  if "$py" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip('/') + '/torch/', timeout=15)" \
      "$TORCH_CPU_INDEX" 2>/dev/null; then echo index; return 0; fi
  tmp=$(mktemp -d)
  if "$py" -m pip install -q --dry-run --no-deps --ignore-installed --target "$tmp" "$CPU_TORCH" >/dev/null 2>&1; then
    rm -rf "$tmp"; echo cpu-wheel; return 0
  fi
  rm -rf "$tmp"
  if has_nvidia_gpu || [ "${STAS_ALLOW_CUDA_TORCH:-0}" = 1 ]; then echo pypi; return 0; fi
  return 1
}
has_nvidia_gpu() { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }
no_cpu_torch_reason() {
  echo "no NVIDIA GPU here, the CPU index $TORCH_CPU_INDEX is unreachable and pip finds no $CPU_TORCH, so only CUDA builds of torch (about 6.7 GB) could be installed; set STAS_TORCH_INDEX to a CPU index or mirror, put a $CPU_TORCH wheel where pip finds it (PIP_FIND_LINKS), or set STAS_ALLOW_CUDA_TORCH=1 to take the CUDA build"
}

# Where set-up builds testbeds: $STAS_TESTBEDS, else the default.
testbeds_root() { echo "${STAS_TESTBEDS:-$HOME/.cache/comfyui-stas/testbeds}"; }
# build_testbeds.sh records where it built them, so that first_run.py and test.sh find testbeds built
# under STAS_TESTBEDS without the variable (stas_harness/server.py reads the same file).
testbeds_record() { echo "$HOME/.cache/comfyui-stas/testbeds-location"; }
# Where to look for testbeds: $STAS_TESTBEDS, else the recorded folder (when it still exists), else the default.
found_testbeds_root() {
  local rec
  if [ -n "${STAS_TESTBEDS:-}" ]; then echo "$STAS_TESTBEDS"; return; fi
  rec=$(head -n 1 "$(testbeds_record)" 2>/dev/null || true)
  if [ -n "$rec" ] && [ -d "$rec" ]; then echo "$rec"; else testbeds_root; fi
}

comfy_python_for() {
  local src=$1 v
  if [ -n "${COMFYUI_PYTHON:-}" ]; then echo "$COMFYUI_PYTHON"; return; fi
  for v in "$src/../venv" "$src/venv" "$src/.venv" "$src/../.venv"; do
    if [ -x "$v/bin/python" ]; then (cd "$v/bin" && echo "$PWD/python"); return; fi
  done
  command -v python3
}

comfy_version_of() {
  sed -n 's/^__version__ *= *["'\'']\([^"'\'']*\)["'\''].*/\1/p' "$1/comfyui_version.py" 2>/dev/null | head -n 1
}

find_testbeds() {
  local src dir
  if [ -n "${COMFYUI_PATH:-}" ]; then
    if [ -f "$COMFYUI_PATH/main.py" ] && [ -d "$COMFYUI_PATH/comfy" ]; then
      src=$(cd "$COMFYUI_PATH" && pwd)
      printf 'comfyui-%s\t%s\t%s\n' "$(comfy_version_of "$src")" "$src" "$(comfy_python_for "$src")"
    fi
    return 0
  fi
  while IFS= read -r dir; do  # oldest version first
    [ -f "$dir/src/main.py" ] && [ -x "$dir/venv/bin/python" ] || continue
    printf '%s\t%s\t%s\n' "$(basename "$dir")" "$dir/src" "$dir/venv/bin/python"
  done < <(find "$(found_testbeds_root)" -mindepth 1 -maxdepth 1 -name 'comfyui-*' -type d 2>/dev/null | sort -V)
}

# Why no testbed was found, for the test summary.
no_testbed_reason() {
  if [ -n "${COMFYUI_PATH:-}" ]; then
    echo "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI checkout (no main.py and comfy/ there)"
  else
    echo "COMFYUI_PATH is unset and $(found_testbeds_root) has no comfyui-*/{src,venv} testbed (built them elsewhere? set STAS_TESTBEDS=<where you built them>)"
  fi
}
