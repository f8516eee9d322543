#!/usr/bin/env bash
# The Triton kernels' GPU checks in one command, for a session lent a GPU machine (the device tool's
# H100/H200: torch and triton, no package registry). The whole script ends within GPU_BUDGET_S
# seconds (default 585, for a 600 s call); each step gets at most what is left, most important first:
#   1. the compiled kernels against the reference: tests/test_kernels.py and the triton backend's
#      tests (CUDA-graph replay included) on 12 pytest-xdist workers (every new shape autotunes every
#      config; the resource check compiles for sm_90 on the CPU and runs in CI);
#   2. every other kernel benchmark once, untimed, on 8 workers: fills torch.compile's and Triton's
#      on-disk caches, so that the timed steps spend their time timing. Steps 1 and 2 run with
#      CTDN_AUTOTUNE_CACHE=0: picks timed on a GPU shared by many workers are not kept on disk;
#   3. timed, serially, with the autotuner's picks printed (TRITON_PRINT_AUTOTUNING): per NAFBlock,
#      then the `paper` model (the issue's targets); torch.compile max-autotune for `paper` (the
#      model at batch 16 and 1, its block at 16 and 1), each case in its own process with up to
#      200 s (compiling one took 46-165 s on the H200); the `edge` model
#      (benchmarks/test_bench_kernels.py);
#   4. with the time left: how much of each model's time its NAFBlocks take and which modules
#      outside them take the rest, then where each block's time goes, per kernel and path
#      (benchmarks/profile_kernels.py --model).
# Arguments name the steps to run (default: all): tests, blocks, paper-model, max-autotune,
# edge-model, profile; e.g. `bash benchmarks/gpu_kernels.sh max-autotune edge-model` for what the
# runs so far left untimed (docs/kernels.md#speed). Step 2 warms what the chosen steps time.
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
if want tests; then
    CTDN_AUTOTUNE_CACHE=0 step 160 "${pt[@]}" -q -n 12 tests/test_kernels.py tests/test_triton_backend.py \
        2>&1 | tee "$out/tests.txt" | tail -n 40 >>"$log"
    tail -n 3 "$out/tests.txt"
fi
warm=()
want blocks && warm+=("test_nafblock")
want paper-model && warm+=("(test_model and paper)")
want edge-model && warm+=("(test_model and edge)")
if ((${#warm[@]})); then
    k=$(printf ' or %s' "${warm[@]}")
    CTDN_AUTOTUNE_CACHE=0 step 160 "${pt[@]}" -q -n 8 --benchmark-disable "$bench" -k "(${k# or }) and not max-autotune" 2>&1 |
        tail -n 30 >>"$log"
fi

export TRITON_PRINT_AUTOTUNING=1
want blocks && step 110 "${pt[@]}" -s "$bench" -k "test_nafblock and not max-autotune" "${cols[@]}" \
    --benchmark-json="$out/gpu-blocks.json" 2>&1 | tee "$out/bench.txt" | tail -n 80 >>"$log"
want paper-model && step 90 "${pt[@]}" -s "$bench" -k "test_model and paper and not max-autotune" "${cols[@]}" \
    --benchmark-json="$out/gpu-model.json" 2>&1 | tee -a "$out/bench.txt" | tail -n 40 >>"$log"
unset TRITON_PRINT_AUTOTUNING
if want max-autotune; then
    # One process per case, each compiling in its own run: a warm-up in other processes did not
    # shorten them (on the H200 a case took 46-165 s to compile either way). The model at batch 16
    # first: the one case no run has timed yet.
    cases=("test_model and paper-16-" "test_model and paper-1-" "test_nafblock and paper-L3-c256-64px-16-"
        "test_nafblock and paper-L3-c256-64px-1-")
    for i in "${!cases[@]}"; do
        step 200 "${pt[@]}" "$bench" -k "${cases[i]} and compile-max-autotune" "${cols[@]}" --durations=1 \
            --benchmark-json="$out/mat-$i.json" 2>&1 | tee -a "$out/bench.txt" | tail -n 12 >>"$log"
    done
    python3 benchmarks/merge_results.py "$out/gpu-max-autotune.json" "$out"/mat-*.json && rm -f "$out"/mat-*.json
fi
want edge-model && step 60 "${pt[@]}" "$bench" -k "test_model and edge and not max-autotune" "${cols[@]}" \
    --benchmark-json="$out/gpu-model-edge.json" 2>&1 | tee -a "$out/bench.txt" | tail -n 30 >>"$log"
want profile && step 120 python3 benchmarks/profile_kernels.py --model --preset paper edge 2>&1 | tee -a "$log"
say "done"
