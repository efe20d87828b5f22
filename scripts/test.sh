#!/usr/bin/env bash
# The test command (README "Tests"; .ci/run runs exactly this).
#   1. unit tests with python3 (or $PYTHON); tests that need ComfyUI skip there;
#   2. the whole suite, integration tests included, on every ComfyUI testbed found
#      ($COMFYUI_PATH, else ${STAS_TESTBEDS:-~/.cache/comfyui-stas/testbeds}/comfyui-*; see testbeds.sh).
# Extra arguments go to every pytest run (e.g. -x, -k workflows). Exit 0 only if every run passed;
# pytest's "no tests collected" (exit 5) counts as passed.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/testbeds.sh
PY=${PYTHON:-python3}
summary=()
failed=0

run() {  # run LABEL PYTHON [env...]: one pytest run, recorded in the summary
  local label=$1 py=$2 rc
  shift 2
  echo
  echo "================ $label ================"
  env "$@" "$py" -m pytest tests -q "${PYTEST_ARGS[@]}"
  rc=$?
  if [ "$rc" = 0 ] || [ "$rc" = 5 ]; then summary+=("passed  $label"); else summary+=("FAILED  $label (pytest exit $rc)"); failed=1; fi
}

mapfile -t TESTBEDS < <(find_testbeds)
testbeds=${#TESTBEDS[@]}

PYTEST_ARGS=("$@")
if [ "$testbeds" -gt 0 ]; then
  PYTEST_ARGS=(-rfE "$@")  # the tests that need ComfyUI skip here and run on the testbeds below
fi
run "unit tests ($($PY -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}")' 2>/dev/null || echo "$PY"); tests that need ComfyUI skip here)" \
  "$PY" -u COMFYUI_PATH -u COMFYUI_PYTHON

PYTEST_ARGS=("$@")
for line in "${TESTBEDS[@]}"; do
  IFS=$'\t' read -r name src tpy <<< "$line"
  run "integration on $name (ComfyUI $(comfy_version_of "$src"), $src)" "$tpy" COMFYUI_PATH="$src" COMFYUI_PYTHON="$tpy"
done

echo
echo "================ summary ================"
printf '%s\n' "${summary[@]}"
if [ "$testbeds" = 0 ]; then
  echo "INTEGRATION TESTS SKIPPED: $(no_testbed_reason)."
  echo "  Point COMFYUI_PATH at a ComfyUI checkout (README, 'Tests') to run them."
else
  echo "ran the real-ComfyUI integration tests on $testbeds testbed(s)"
fi
exit "$failed"
