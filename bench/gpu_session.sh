#!/usr/bin/env bash
# The lead's GPU session for issues 27 (speed II) and 31 (graph captures on several threads).
#
#   bench/gpu_session.sh PART [PART ...]     from the repository root, after installing the carried
#                                            wheels (diffusers, ...) and this repo
#
# Each PART is one device call on a fresh machine (every compile cold), runnable alone: the time
# limits of its steps add up to at most 530 s, so a part ends within 9 minutes even when every step
# runs to its limit. Run them in this order of priority. Everything lands in $OUT (default ./gpu-out): one log
# per step, the JSON of every bench/latency run, junit XML of the tests; the last lines printed are
# the summary table (bench/gpu_summary.py).
#
#   tests     every file with GPU tests at once, one process each (own CPU cores for compiling),
#             then the memory-budget file alone (it reads the device's memory in use)   ~6-8 min
#   speed     SDXL-Turbo full + tiny VAE, new prompt / new seed every frame, overlap off and on, with
#             the plain diffusers call as baseline (bench); then through the real daemon, overlap
#             off and on: OSC-to-frame p50 and a stream of changes (latency)        ~7-8 min
#   more      SD-Turbo full + tiny, overlap off/on (bench, baseline); the VAE decode alone for the
#             decoder knobs (compile mode, cuDNN benchmark, channels-last)          ~6-8 min
#   start     cold start to first frame, then a fresh-machine start from the compile artefact file
#             alone (compile caches emptied), then a warm start                    ~5-6 min
#   channels  4 channels on one GPU, overlap off and on (latency --channels 4)      ~8-9 min
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
TB="python -m bridge"
CACHE=/tmp/tbc  # one compile cache per call: later steps of a part reuse what earlier ones compiled

step() {  # step NAME LIMIT_S CMD...: run with a time limit, log to $OUT/NAME.log, note rc and seconds
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc $(( $(date +%s) - start ))s" | tee -a "$OUT/steps.txt"
    return 0
}

part_tests() {
    export TORCHINDUCTOR_CACHE_DIR=/tmp/tb-inductor TRITON_CACHE_DIR=/tmp/tb-triton  # shared: same demo graphs
    local files=(tests/pipeline/test_gpu.py tests/pipeline/test_gpu_overlap.py tests/pipeline/test_gpu_graphs.py
                 tests/pipeline/test_gpu_lora.py tests/pipeline/test_gpu_controlnet.py
                 tests/pipeline/test_gpu_ip_adapter.py tests/pipeline/test_gpu_t2i.py
                 tests/pipeline/test_gpu_sd15_sdxs.py tests/pipeline/test_gpu_sana.py
                 tests/pipeline/test_devices.py tests/bench/test_bench_cpu.py)
    for f in "${files[@]}"; do
        local n; n=$(basename "$f" .py)
        step "$n" 420 python -m pytest -q -m gpu "$f" -p no:cacheprovider --junitxml="$OUT/junit-$n.xml" &
    done
    wait
    step test_memory_budget 100 python -m pytest -q -m gpu tests/bench/test_memory_budget.py -p no:cacheprovider \
        --junitxml="$OUT/junit-test_memory_budget.xml"
}

part_speed() {
    step bench-sdxl 300 $TB bench --model random --sizes 512 --vaes full,tiny --modes prompt,seed --overlap off,on \
        --frames 60 --cache-dir $CACHE --json "$OUT/bench-sdxl.json"
    for overlap in off on; do
        step "latency-sdxl-full-overlap-$overlap" 110 $TB latency --model random --count 200 --rate 20 \
            --stream-rate 200 --json "$OUT/latency-sdxl-full-overlap-$overlap.json" -- --cache-dir $CACHE --overlap $overlap
    done
}

part_more() {
    step bench-sd 240 $TB bench --model random-sd --sizes 512 --vaes full,tiny --modes prompt,seed --overlap off,on \
        --frames 60 --cache-dir $CACHE --json "$OUT/bench-sd.json"
    step decode-knobs 120 $TB bench --model random --modes decode --sizes 512 --no-baseline --cudnn-benchmark on,off \
        --vae-channels-last on,off --cache-dir $CACHE --json "$OUT/decode-knobs.json"
    step decode-autotune 150 $TB bench --model random --modes decode --sizes 512 --no-baseline \
        --vae-compile-modes default,max-autotune-no-cudagraphs --cache-dir $CACHE --json "$OUT/decode-autotune.json"
}

part_start() {
    rm -rf /tmp/tbs
    step start-cold 200 $TB latency --model random --count 20 --rate 20 --json "$OUT/start-cold.json" -- \
        --cache-dir /tmp/tbs --compile-artifacts on
    rm -rf /tmp/tbs/compile/inductor /tmp/tbs/compile/triton  # a fresh machine that carries only the file
    step start-artifacts 120 $TB latency --model random --count 20 --rate 20 --json "$OUT/start-artifacts.json" -- \
        --cache-dir /tmp/tbs --compile-artifacts on
    step start-warm 120 $TB latency --model random --count 20 --rate 20 --json "$OUT/start-warm.json" -- \
        --cache-dir /tmp/tbs
    ls -la /tmp/tbs/compile/artifacts >"$OUT/artifacts.txt" 2>&1
}

part_channels() {
    for overlap in off on; do
        step "channels4-overlap-$overlap" 260 $TB latency --model random --size 512 --channels 4 --seconds 12 \
            --json "$OUT/channels4-overlap-$overlap.json" -- --cache-dir $CACHE --device cuda:0 --overlap $overlap
    done
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/gpu.txt" 2>&1
python -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" >>"$OUT/gpu.txt" 2>&1
git log -1 --format='commit %h %s' >>"$OUT/gpu.txt" 2>/dev/null
for part in "$@"; do
    case $part in
        tests|speed|more|start|channels) "part_$part" ;;
        *) echo "unknown part $part: tests, speed, more, start, channels" >&2; exit 2 ;;
    esac
done
python bench/gpu_summary.py "$OUT"
