#!/usr/bin/env bash
# Run every benchmark in order; pass --quick to use the reduced sizes everywhere.
# Usage (from the repo root): bench/run_all.sh [--quick]
# Results: bench/results/<name>.json; one summary line per benchmark on stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
status=0
for name in generate reader preprocess train_loop scaling repro gpu_profile ray_engine; do
    if [ "$name" = ray_engine ] && ! "$PY" -c "import ray" 2>/dev/null; then
        echo "== bench/ray_engine.py skipped: the ray extra is not installed"; continue
    fi
    echo "== bench/$name.py $*"
    "$PY" "bench/$name.py" "$@" || { echo "!! bench/$name.py failed"; status=1; }
done
exit $status
