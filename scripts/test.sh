#!/usr/bin/env bash
# The test command (README "Tests"; .ci/run runs exactly this). Outside CI it is the everyday run: the newest
# testbed only and `-m "not slow"`; CI=true or STAS_FULL=1 runs the full matrix (every testbed, every test).
#   1. unit tests with python3 (or $PYTHON); tests that need ComfyUI skip there;
#   2. the whole suite, integration tests included, on every ComfyUI testbed found
#      ($COMFYUI_PATH, else ${STAS_TESTBEDS:-~/.cache/comfyui-stas/testbeds}/comfyui-*; see testbeds.sh).
# Extra arguments go to every pytest run (e.g. -x, -k workflows, -m "not slow"; the markers integration,
# browser and slow are described in tests/conftest.py). Exit 0 only if every run passed; pytest's
# "no tests collected" (exit 5) counts as passed.
# With CI=true (or STAS_REQUIRE_TESTBEDS=1) it also fails unless the oldest and the newest supported
# ComfyUI (TESTBED_VERSIONS) were tested, and on the testbeds a missing ComfyUI, Chromium or
# playwright fails the tests that need it instead of skipping them (STAS_REQUIRE_ENV=1).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/testbeds.sh
PY=${PYTHON:-python3}
strict=0
if [ "${CI:-}" = true ] || [ "${STAS_REQUIRE_TESTBEDS:-0}" = 1 ]; then strict=1; fi
summary=()
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run() {  # run LABEL PYTHON [env...]: one pytest run, recorded in the summary with its counts
  local label=$1 py=$2 rc counts
  shift 2
  echo
  echo "================ $label ================"
  env "$@" "$py" -m pytest tests -q "${PYTEST_ARGS[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  counts=$(grep -E '^=* ?[0-9]+ (passed|failed|skipped|error)' "$log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//; s/ in [0-9.]+s.*//')
  if [ "$rc" = 0 ] || [ "$rc" = 5 ]; then
    summary+=("passed  $label: ${counts:-no tests}")
  else
    summary+=("FAILED  $label (pytest exit $rc): ${counts:-no summary line}")
    failed=1
  fi
}

mapfile -t TESTBEDS < <(find_testbeds)
testbeds=${#TESTBEDS[@]}

# The everyday run: the newest testbed only, and no test marked slow (an -m of your own replaces that). CI
# (CI=true, STAS_REQUIRE_TESTBEDS=1) and STAS_FULL=1 run the full matrix: every testbed, every test.
everyday=0
if [ "$strict" = 0 ] && [ "${STAS_FULL:-0}" != 1 ]; then
  everyday=1
  [[ " $* " == *" -m"* ]] || set -- -m "not slow" "$@"
  if [ "$testbeds" -gt 1 ]; then TESTBEDS=("${TESTBEDS[-1]}"); fi   # find_testbeds lists the oldest first
fi

PYTEST_ARGS=("$@")
if [ "$testbeds" -gt 0 ]; then
  PYTEST_ARGS=(-rfE "$@")  # the tests that need ComfyUI skip here and run on the testbeds below
fi
run "unit tests ($($PY -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}")' 2>/dev/null || echo "$PY"); tests that need ComfyUI skip here)" \
  "$PY" -u COMFYUI_PATH -u COMFYUI_PYTHON -u STAS_REQUIRE_ENV

PYTEST_ARGS=("$@")
tested=()
for line in "${TESTBEDS[@]}"; do
  IFS=$'\t' read -r name src tpy <<< "$line"
  version=$(comfy_version_of "$src")
  tested+=("$version")
  run "integration on $name (ComfyUI $version, $src)" "$tpy" COMFYUI_PATH="$src" COMFYUI_PYTHON="$tpy" \
    STAS_REQUIRE_ENV="$strict"
done

echo
echo "================ summary ================"
printf '%s\n' "${summary[@]}"
if [ "$everyday" = 1 ]; then
  echo "everyday run: the newest testbed only$([[ " $* " == *" -m not slow "* ]] && echo ", tests marked slow left out") (STAS_FULL=1 bash scripts/test.sh runs every testbed and every test, as CI does)"
fi
if [ "$testbeds" = 0 ]; then
  echo "INTEGRATION TESTS SKIPPED: $(no_testbed_reason)."
  echo "  Run 'bash scripts/setup.sh' to build them, or point COMFYUI_PATH at a ComfyUI checkout (README, 'Tests')."
else
  echo "ran the real-ComfyUI integration tests on ${#tested[@]} testbed(s): ComfyUI ${tested[*]}"
fi
if [ "$strict" = 1 ]; then
  for need in "${TESTBED_VERSIONS[0]}" "${TESTBED_VERSIONS[-1]}"; do
    if [[ " ${tested[*]} " != *" $need "* ]]; then
      if [ -n "${COMFYUI_PATH:-}" ]; then where="COMFYUI_PATH names ComfyUI ${tested[*]:-none}"; else where="$(found_testbeds_root)/comfyui-$need is missing"; fi
      echo "FAILED  CI needs the integration tests on ComfyUI $need (the oldest and newest supported) and they did not run: $where. Run 'bash scripts/setup.sh' (with COMFYUI_PATH unset)."
      failed=1
    fi
  done
fi
exit "$failed"
