#!/usr/bin/env bash
# The GPU lane in one command (issue 26): on a machine with CUDA and only this tree (torch, numpy, pytest,
# hypothesis, pytest-xdist, matplotlib, rich installed; no registry needed), run
#   1. the CUDA lane of the suite (float32, TF32, float16, bfloat16, autocast, every SDPA backend; not the slow tier),
#   2. the equivalence report on --device cuda (float64, float32, float16, bfloat16),
#   3. the throughput benchmark on CUDA (quick rounds),
# each under its own time limit (about 8 minutes in all), writing everything under one folder.
#
#   bash benchmarks/gpu_lane.sh [OUTDIR]        (default: $OUT if set, else ./gpu-lane-out)
#   bash benchmarks/gpu_lane.sh --help
#
# Exit status: 0 every step passed; 1 a step failed (the summary says which); 2 usage error; 3 no CUDA device
# (it says so and runs nothing: a CPU machine must not pass for a GPU lane). Fill docs/cuda.md from summary.md.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_lane.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "gpu_lane.sh: at most one argument (OUTDIR)" >&2; exit 2; }
out=${1:-${OUT:-gpu-lane-out}}
PY=${PYTHON:-python}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null; then
    echo "gpu_lane.sh: no CUDA device on this machine (torch.cuda.is_available() is False): nothing run" >&2
    exit 3
fi
mkdir -p "$out" || exit 2
export CI=true
workers=$("$PY" -c 'import os; print(max(1, min(8, (os.cpu_count() or 2) - 1)))')
summary="$out/summary.md"
{
    echo "# GPU lane, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    "$PY" - <<'PYEOF'
import platform, torch
print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; CUDA {torch.version.cuda}; "
      f"Python {platform.python_version()}")
PYEOF
    echo
    echo "| step | exit | seconds | output |"
    echo "|---|---|---|---|"
} > "$summary"

status=0
step() {  # step NAME LIMIT_S LOGFILE COMMAND...
    local name=$1 limit=$2 log=$3; shift 3
    local start=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$out/$log" 2>&1
    local rc=$?
    echo "| $name | $rc | $((SECONDS - start)) | $log |" >> "$summary"
    echo "gpu_lane: $name: exit $rc in $((SECONDS - start)) s ($out/$log)"
    [ $rc -eq 0 ] || status=1
}

step "suite, CUDA lane (-m 'not slow' --device cuda)" 300 suite.log \
    "$PY" -m pytest tests -m "not slow" --device cuda -q -rs -n "$workers" -p no:cacheprovider \
    --junitxml "$out/suite.xml" --card-json "$out/card.json"
step "report --device cuda (every dtype)" 120 report.log \
    "$PY" -m reference.report --device cuda --dtype all --no-progress --json "$out/report.json"
step "benchmark (CUDA, quick)" 90 bench.log \
    "$PY" -m benchmarks.run --device cuda --quick --json "$out/bench.json" --markdown "$out/bench.md"

{
    echo
    echo "## Suite"
    echo
    tail -n 3 "$out/suite.log" | sed 's/^/    /'
    echo
    echo "## Report"
    echo
    grep -E "rows .* in .* s|FAIL" "$out/report.log" | head -n 20 | sed 's/^/    /'
} >> "$summary"
echo "gpu_lane: summary in $summary (exit $status)"
exit $status
