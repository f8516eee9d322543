#!/usr/bin/env bash
# The Triton kernels' GPU checks in one command, for a session lent a GPU machine (the device tool's
# H100/H200: torch and triton, no package registry). The whole script ends within GPU_BUDGET_S
# seconds (default 560); each step gets at most what is left, most important first:
#   1. the compiled kernels against the reference: tests/test_kernels.py, the triton backend's tests
#      (CUDA-graph replay included) and the resource check, on 12 pytest-xdist workers (on the
#      H200, 8 workers took 199 s: every new shape autotunes every config);
#   2. every kernel benchmark once, untimed, on 8 workers: fills torch.compile's and Triton's on-disk
#      caches, so that the timed run below spends its time timing;
#   3. timed, serially: per NAFBlock, then the whole model (benchmarks/test_bench_kernels.py), with
#      the autotuner's picks printed (TRITON_PRINT_AUTOTUNING);
#   4. with the time left: where each fused block's time goes (benchmarks/profile_kernels.py; paper
#      first, each path including split-ln), then torch.compile max-autotune for the paper preset.
# Results go to $OUT (the device tool's folder) or ./gpu-out: log.txt (everything), tests.txt,
# bench.txt, gpu-blocks.json, gpu-model.json, gpu-max-autotune.json (-> benchmarks/results/).
#
# pydicom, a core dependency, is not on that machine, and its setuptools may predate the PEP 639
# license field: carry both as wheels, prepared here with
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl pydicom "setuptools>=77"
# and run with carry [".whl"]:  bash benchmarks/gpu_kernels.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
budget=${GPU_BUDGET_S:-560}
log="$out/log.txt"
export PYTHONUNBUFFERED=1
exec 3>&1  # progress lines reach the caller even from a step whose output is piped to a file
say() { echo "== $* (t=${SECONDS}s)" | tee -a "$log" >&3; }
# step SECONDS CMD...: CMD under a timeout of SECONDS or the time left, whichever is less (SIGINT
# first, so pytest still writes its summary and JSON).
step() {
    local t=$1 left=$((budget - SECONDS))
    shift
    ((t > left)) && t=$left
    if ((t < 20)); then
        say "skipped, ${left}s left: $*"
        return 1
    fi
    say "${t}s at most: $*"
    timeout -s INT -k 15 "$t" "$@"
}

# The carried wheels: setuptools only for the build below, the rest for the run.
for whl in .whl/*.whl; do
    [[ -e $whl ]] || continue
    case $(basename "$whl") in setuptools-*) dir=/tmp/build ;; *) dir=/tmp/site ;; esac
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$dir" "$whl" >>"$log" 2>&1
done
[[ -d /tmp/site ]] && export PYTHONPATH=/tmp/site
if ! PYTHONPATH=/tmp/build${PYTHONPATH:+:$PYTHONPATH} python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$log" 2>&1; then
    say "pip install -e . failed (see above): ctdn.kernels and ctdn.train through links instead"
    ln -sfn ../kernels ctdn/kernels && ln -sfn ../train ctdn/train
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import ctdn.kernels, pydicom" 2>&1 | tee -a "$log"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$log"
python3 -c "import torch, triton, numpy; print('torch', torch.__version__, 'triton', triton.__version__,
    'numpy', numpy.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" 2>&1 | tee -a "$log"

pt=(python3 -m pytest -p no:cacheprovider)
step 200 "${pt[@]}" -q -n 12 tests/test_kernels.py tests/test_triton_backend.py tests/test_kernel_resources.py \
    2>&1 | tee "$out/tests.txt" | tail -n 40 >>"$log"
tail -n 3 "$out/tests.txt"

bench=benchmarks/test_bench_kernels.py
step 170 "${pt[@]}" -q -n 8 --benchmark-disable "$bench" -k "not max-autotune" 2>&1 | tail -n 30 >>"$log"
export TRITON_PRINT_AUTOTUNING=1
step 150 "${pt[@]}" -s "$bench" -k "test_nafblock and not max-autotune" --benchmark-only \
    --benchmark-json="$out/gpu-blocks.json" --benchmark-columns=min,mean,median,rounds --benchmark-max-time=0.5 2>&1 | tee "$out/bench.txt" |
    tail -n 80 >>"$log"
step 120 "${pt[@]}" -s "$bench" -k "test_model and not max-autotune" --benchmark-only \
    --benchmark-json="$out/gpu-model.json" --benchmark-columns=min,mean,median,rounds --benchmark-max-time=0.5 2>&1 | tee -a "$out/bench.txt" |
    tail -n 40 >>"$log"
unset TRITON_PRINT_AUTOTUNING
# paper first: its split vs split-ln columns are what the next decision (path_for) waits on
step 120 python3 benchmarks/profile_kernels.py --preset paper edge 2>&1 | tee -a "$log"
step 300 "${pt[@]}" "$bench" -k "max-autotune and paper and not 16" --benchmark-only \
    --benchmark-json="$out/gpu-max-autotune.json" --benchmark-columns=min,mean,median,rounds --benchmark-max-time=0.5 2>&1 | tail -n 30 >>"$log"
say "done"
