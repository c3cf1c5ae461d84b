#!/usr/bin/env bash
# The one command that proves the CUDA backend on a machine with an NVIDIA GPU,
# torch and nvcc already installed and no package registry. Under 10 minutes:
#   1. build and install robustagg against the installed torch (CUDA kernels included);
#   2. pytest -m cuda: every op on CUDA tensors vs the CPU kernels, the reference and the
#      emulated launchers; streams, graph capture, torch.compile, every rule;
#   3. compute-sanitizer memcheck and racecheck over bench/gpu_driver.py (every kernel);
#   4. bench/results/<gpu>.md: every op vs the reference on the same GPU, GB/s, targets;
#      bench/results/<gpu>_model.md beside it: the cost model's estimate of the same build.
# Whenever a GPU is available this runs first: fix what fails, commit the table.
# Logs go to $OUT when set (the device tool), else to bench/results/gpu_logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-bench/results/gpu_logs}
mkdir -p "$LOGS"
PY=${PYTHON:-python3}
# STEPS: a subset of "build test sanitize bench" (default all), to split the check over
# several calls of at most 10 minutes each when needed (the build stays on a warm machine).
STEPS=${STEPS:-build test sanitize bench}
status=0
T0=$SECONDS
step() { echo; echo "== $* (at $((SECONDS - T0)) s)"; }
want() { [[ " $STEPS " == *" $1 "* ]]; }

if want build; then
step "build and install (no build isolation: against this machine's torch and nvcc)"
export ROBUSTAGG_CUDA=1 ROBUSTAGG_BUILD_JOBS=${ROBUSTAGG_BUILD_JOBS:-16}
"$PY" -m pip install --no-build-isolation --no-deps . > "$LOGS/build.log" 2>&1 || { tail -40 "$LOGS/build.log"; echo "BUILD FAILED"; exit 1; }
tail -2 "$LOGS/build.log"
fi
( cd /tmp && "$PY" -c "import json, robustagg; i = robustagg.native_info(); print(json.dumps({k: i[k] for k in ('version', 'backends', 'cuda_archs', 'cuda_fallback')}))" )

if want test; then
step "pytest -m cuda"
# From inside python_tests, so that `import robustagg` finds the installed build, not the source tree.
( cd python_tests && "$PY" -m pytest -m cuda . -q --maxfail=25 -p no:cacheprovider ) 2>&1 | tee "$LOGS/pytest_cuda.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "CUDA TESTS FAILED"; status=1; }
fi

if want sanitize; then
step "compute-sanitizer (memcheck, racecheck) over every kernel"
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 "$PY" bench/gpu_driver.py \
        > "$LOGS/sanitizer_$tool.log" 2>&1
    rc=$?
    tail -4 "$LOGS/sanitizer_$tool.log"
    if [ $rc -ne 0 ]; then
      if [ $rc -eq 124 ]; then
        echo "compute-sanitizer $tool: stopped after 240 s (incomplete, not a failure of robustagg's kernels)"
      elif grep -q -i "not supported\|Device not supported" "$LOGS/sanitizer_$tool.log"; then
        echo "compute-sanitizer $tool: device not supported on this machine (not a robustagg failure)"
      else
        echo "SANITIZER $tool FAILED (rc=$rc)"; status=1
      fi
    fi
  done
else
  echo "compute-sanitizer not found; skipped"
fi
fi

if want bench; then
step "benchmark table"
GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).lower().replace('nvidia', '').strip().replace(' ', '_'))")
"$PY" bench/gpu_table.py --out "bench/results/${GPU}.md" 2>&1 | tee "$LOGS/gpu_table.log" | tail -40
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "BENCHMARK FAILED"; status=1; }
cp "bench/results/${GPU}.md" "$LOGS/" 2>/dev/null || true
"$PY" bench/gpu_model.py --out "bench/results/${GPU}_model.md" > "$LOGS/gpu_model.log" 2>&1 \
  && cp "bench/results/${GPU}_model.md" "$LOGS/" || echo "gpu_model failed (the estimate only; see gpu_model.log)"
fi

echo
echo "gpu_check ($STEPS): $((SECONDS - T0)) s"
[ $status -eq 0 ] && echo "gpu_check: all passed" || echo "gpu_check: FAILURES above"
exit $status
