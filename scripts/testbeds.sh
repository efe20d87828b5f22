# Sourced by setup.sh and test.sh: finds the real ComfyUI installs ("testbeds") to test against.
#
#   $COMFYUI_PATH set    -> that one ComfyUI, run by $COMFYUI_PYTHON, else a venv beside or inside
#                           it (../venv, ./venv, ./.venv, ../.venv), else python3.
#   $COMFYUI_PATH unset  -> every ${STAS_TESTBEDS:-$HOME/.cache/comfyui-stas/testbeds}/comfyui-*/
#                           that has src/main.py and venv/bin/python.
#
# find_testbeds prints one line per testbed: NAME<TAB>SRC<TAB>PYTHON.
# Keep in sync with stas_harness/server.py (comfy_python_for), which resolves the same python.

# The ComfyUI versions the pack supports and tests against, oldest first. setup.sh builds one
# testbed per version; pyproject's requires-comfyui names the first (tests/test_packaging.py).
TESTBED_VERSIONS=(0.3.64 0.8.0 0.33.0)

testbeds_root() { echo "${STAS_TESTBEDS:-$HOME/.cache/comfyui-stas/testbeds}"; }

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
  done < <(find "$(testbeds_root)" -mindepth 1 -maxdepth 1 -name 'comfyui-*' -type d 2>/dev/null | sort -V)
}

# Why no testbed was found, for the test summary.
no_testbed_reason() {
  if [ -n "${COMFYUI_PATH:-}" ]; then
    echo "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI checkout (no main.py and comfy/ there)"
  else
    echo "COMFYUI_PATH is unset and $(testbeds_root) has no comfyui-*/{src,venv} testbed"
  fi
}
