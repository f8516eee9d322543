#!/usr/bin/env bash
# The Triton kernels' GPU checks in one command, for a session lent a GPU machine (the device tool's
# H100/H200, which has torch and triton but no package registry). NOT YET RUN: no session has had a
# GPU. About 10 minutes: the compiled kernels against the reference (tests/test_kernels.py and the
# backend's CUDA-graph tests), then the kernel benchmarks without max-autotune (its compiles take
# minutes per case; BENCH_K='' runs them too). Results go to $OUT (the device tool's folder) or
# ./gpu-out: gpu.txt, tests.txt, bench.txt, gpu-kernels.json (-> benchmarks/results/).
#
# pydicom, a core dependency, is not on that machine: carry it as a wheel, prepared here with
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl pydicom
# and run with carry [".whl"]:  bash benchmarks/gpu_kernels.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_triton_backend.py \
    2>&1 | tee "$out/tests.txt"
timeout 420 python3 -m pytest -q -p no:cacheprovider benchmarks/test_bench_kernels.py --benchmark-only \
    -k "${BENCH_K-not max-autotune}" --benchmark-json="$out/gpu-kernels.json" 2>&1 | tee "$out/bench.txt"
