#!/usr/bin/env bash
# The Triton kernels' GPU checks in one command, for a session lent a GPU machine (the device tool's
# H100/H200: torch and triton, no package registry). The whole script ends within GPU_BUDGET_S
# seconds (default 585, for a 600 s call); each step gets at most what is left, most important first:
#   0. in the background from the start: torch.compile max-autotune for `paper` (its block at batch 1
#      and 16, the model at batch 1), untimed, to fill inductor's on-disk cache (a first
#      max-autotune compile takes minutes; an earlier run never finished one). It is stopped before
#      the timed steps begin, so nothing else runs on the GPU while they time;
#   1. the compiled kernels against the reference: tests/test_kernels.py and the triton backend's
#      tests (CUDA-graph replay included) on 12 pytest-xdist workers (every new shape autotunes every
#      config; the resource check compiles for sm_90 on the CPU and runs in CI);
#   2. every other kernel benchmark once, untimed, on 8 workers: fills torch.compile's and Triton's
#      on-disk caches, so that the timed steps spend their time timing;
#   3. timed, serially, with the autotuner's picks printed (TRITON_PRINT_AUTOTUNING): per NAFBlock,
#      then the `paper` model (the issue's targets), max-autotune (from the cache of step 0), the
#      `edge` model (benchmarks/test_bench_kernels.py);
#   4. with the time left: how much of each model's time its NAFBlocks take, then where each
#      block's time goes, per kernel and path (benchmarks/profile_kernels.py --model).
# Arguments name the steps to run (default: all): tests, blocks, paper-model, max-autotune,
# edge-model, profile; e.g. `bash benchmarks/gpu_kernels.sh max-autotune edge-model profile` for what
# a run of all of them left out (docs/kernels.md#speed). Step 2 warms what the chosen steps time.
# Results go to $OUT (the device tool's folder) or ./gpu-out: log.txt (everything), tests.txt,
# bench.txt, gpu-blocks.json, gpu-model.json, gpu-model-edge.json, gpu-max-autotune.json
# (-> benchmarks/results/).
#
# pydicom, a core dependency, is not on that machine, and its setuptools may predate the PEP 639
# license field: carry both as wheels, prepared here with
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl pydicom "setuptools>=77"
# and run with carry [".whl"]:  bash benchmarks/gpu_kernels.sh
set -uo pipefail
cd "$(dirname "$0")/.."
all=(tests blocks paper-model max-autotune edge-model profile)
steps=("$@")
((${#steps[@]})) || steps=("${all[@]}")
for s in "${steps[@]}"; do
    [[ " ${all[*]} " == *" $s "* ]] || { echo "unknown step '$s'; steps: ${all[*]}" >&2; exit 2; }
done
want() { [[ " ${steps[*]} " == *" $1 "* ]]; }
out=${OUT:-gpu-out}
mkdir -p "$out"
budget=${GPU_BUDGET_S:-585}
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
bench=benchmarks/test_bench_kernels.py
cols=(--benchmark-only --benchmark-columns=min,mean,median,rounds --benchmark-max-time=0.5)
mat="compile-max-autotune and paper and (test_nafblock or paper-1-)"
bg=
if want max-autotune; then
    bg_end=$((budget * 55 / 100)) # step 0 ends here at the latest
    say "background until t=${bg_end}s at most: max-autotune compiles (-k '$mat')"
    timeout -s INT -k 15 $((bg_end - SECONDS)) "${pt[@]}" -q -n 3 --benchmark-disable "$bench" -k "$mat" \
        >"$out/max-autotune-warm.txt" 2>&1 &
    bg=$!
fi

if want tests; then
    step 160 "${pt[@]}" -q -n 12 tests/test_kernels.py tests/test_triton_backend.py \
        2>&1 | tee "$out/tests.txt" | tail -n 40 >>"$log"
    tail -n 3 "$out/tests.txt"
fi
warm=()
want blocks && warm+=("test_nafblock")
want paper-model && warm+=("(test_model and paper)")
want edge-model && warm+=("(test_model and edge)")
if ((${#warm[@]})); then
    k=$(printf ' or %s' "${warm[@]}")
    step 160 "${pt[@]}" -q -n 8 --benchmark-disable "$bench" -k "(${k# or }) and not max-autotune" 2>&1 |
        tail -n 30 >>"$log"
fi
if [[ -n $bg ]]; then
    wait "$bg"
    say "background max-autotune compiles ended: $(tail -n 1 "$out/max-autotune-warm.txt")"
fi

export TRITON_PRINT_AUTOTUNING=1
want blocks && step 110 "${pt[@]}" -s "$bench" -k "test_nafblock and not max-autotune" "${cols[@]}" \
    --benchmark-json="$out/gpu-blocks.json" 2>&1 | tee "$out/bench.txt" | tail -n 80 >>"$log"
want paper-model && step 90 "${pt[@]}" -s "$bench" -k "test_model and paper and not max-autotune" "${cols[@]}" \
    --benchmark-json="$out/gpu-model.json" 2>&1 | tee -a "$out/bench.txt" | tail -n 40 >>"$log"
unset TRITON_PRINT_AUTOTUNING
want max-autotune && step 60 "${pt[@]}" "$bench" -k "$mat" "${cols[@]}" --benchmark-json="$out/gpu-max-autotune.json" \
    2>&1 | tee -a "$out/bench.txt" | tail -n 30 >>"$log"
want edge-model && step 60 "${pt[@]}" "$bench" -k "test_model and edge and not max-autotune" "${cols[@]}" \
    --benchmark-json="$out/gpu-model-edge.json" 2>&1 | tee -a "$out/bench.txt" | tail -n 30 >>"$log"
want profile && step 120 python3 benchmarks/profile_kernels.py --model --preset paper edge 2>&1 | tee -a "$log"
say "done"
