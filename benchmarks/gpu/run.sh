#!/usr/bin/env bash
# The GPU benchmark's entry point on the device machine: install the carried wheels (.whl/, from wheels.sh) and
# wherefrom from this tree into /tmp/site, then run benchmarks/gpu/driver.py, which writes gpu.md, gpu.json,
# logs.tar.gz and run.log into $OUT. Extra arguments go to the driver (e.g. --steps kronfluence bergson).
# The call to make, and how long it takes: benchmarks/README.md, "GPU benchmark".
set -uo pipefail
started=$(date +%s)
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out="${OUT:?set OUT to the folder for the results}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl . || { echo "installing the carried wheels and wherefrom failed"; exit 1; }
export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
commit=$(cat .whl/COMMIT 2>/dev/null || echo unknown)
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv 2>&1 | tee "$out/nvidia-smi.txt"
python3 -m benchmarks.gpu.driver --out "$out" --started-at "$started" --commit "$commit" "$@" 2>&1 | tee "$out/run.log"
exit "${PIPESTATUS[0]}"
