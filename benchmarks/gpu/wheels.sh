#!/usr/bin/env bash
# Run HERE (not on the device) before the device call: fetch the wheels the GPU machine lacks into .whl/
# (git-ignored; the device tool's `carry` takes it) and record the commit being measured in .whl/COMMIT.
# The device has Python 3.12, torch, transformers, peft, accelerate, einops, opt-einsum, safetensors, pyarrow,
# pandas, xxhash, jaxtyping, ml-dtypes, pytest, pynvml (see /work/.library/device/KINDS.md); it lacks the peers
# and the pure-Python packages below. wherefrom itself is installed from the tree on the device (run.sh).
# Versions are those benchmarks/setup_peers.sh installs for the CPU comparison.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    kronfluence==1.0.1 einconv==0.1.0 \
    bergson==2.5.1 simple-parsing==0.1.9 docstring-parser==0.18.0 petname==2.9 natsort==8.4.0 \
    torchopt==0.7.3 optree==0.20.0 graphviz==0.21 \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 threadpoolctl==3.8.0
commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then commit="$commit+uncommitted-changes"; fi
echo "$commit" > .whl/COMMIT
du -sh .whl && ls .whl && echo "commit: $commit"
