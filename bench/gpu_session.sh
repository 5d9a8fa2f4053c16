#!/usr/bin/env bash
# The lead's GPU session for issues 27 (speed II) and 31 (graph captures on several threads).
#
#   bench/gpu_session.sh PART [PART ...]     from the repository root, after installing the carried
#                                            wheels (diffusers, ...) and this repo
#
# Each PART is one device call on a fresh machine (every compile cold), runnable alone: the time
# limits of its steps add up to at most 550 s, so a part ends within 10 minutes even when every step
# runs to its limit; GPU_DEADLINE_S (seconds from the start, default 560) shortens every step's limit so
# the whole run ends before it (a call's limit can be less than 600 s when little device time is left).
# Run them in this order of priority. Every log, the JSON of every bench/latency run and the junit XML
# of the tests go to $GPU_WORK (default /tmp/gpu-work); at the end, also when cut, $OUT gets two files
# (the device tool brings back at most 8, 16 MiB each, 64 MiB in all): summary.txt (bench/gpu_summary.py's
# tables, also printed last) and gpu-run.tar.gz (all of $GPU_WORK); `start` adds the artefact file's chunks.
#
#   tests     every file with GPU tests at once, one process each (own CPU cores for compiling),
#             then the memory-budget file alone (it reads the device's memory in use)   ~6-8 min
#             carry .whl-ray (no GPU test needs PyAV) so tests/cluster/test_cluster_gpu.py runs with the
#             rest; with .whl it is skipped (no Ray), and the summary says so
#   tests1    the memory-budget file, then every other GPU test file from the first at once     ~4-5 min
#   tests2    the rest of `tests`' files at once (`tests1` then `tests2`: two calls on one warm machine, where
#             `tests` in one call ran files past their 500 s, all compiling at once: runs S14, S15)   ~4-5 min
#   budget    the memory-budget test file alone (the last step of `tests`), for a call whose `tests` was cut   ~1 min
#   speed     SDXL-Turbo full + tiny VAE, new prompt / new seed every frame, overlap off, on and decode-only, with
#             the plain diffusers call as baseline (bench); then through the real daemon, overlap
#             off and on: OSC-to-frame p50 and a stream of changes (latency)        ~7-8 min
#   more      where each stage's GPU time goes, kernel by kernel (bench --modes kernels: SDXL full VAE,
#             then SDXS-512; per stage: busy, idle and gaps, by category, top kernels), then the VAE
#             decode alone under max-autotune (the other knobs and SD-Turbo's frames ran in S4)  ~8-9 min
#   kernels   the first half of `more`: the kernel profiles alone                ~5 min
#   autotune  the second half of `more`: the VAE decode under max-autotune       ~3-4 min
#   timeline  where an overlapped frame's interval goes (issue 27's 100 FPS miss, 1.7 %): SDXL-Turbo tiny VAE, overlap
#             on, a new prompt then a new seed every frame, 40 frames each under torch.profiler (bench --modes
#             timeline): per frame the GPU's busy and idle time, the CPU phase each idle gap fell in, each stream's
#             busy time and the time streams ran at once; the step has 300 s (cold compile ~95 s on an H100, the
#             load, the profiler's overhead and its trace's parsing)                ~3-5 min
#   start     cold start to first frame, then a fresh-machine start from the compile artefact file
#             alone (compile caches emptied), then a warm start; the artefact file comes back gzipped in
#             15 MiB chunks ($OUT/artifacts.tgz.part-*) for `carried`, if it is small enough to be carried  ~5-6 min
#   carried   on a fresh machine (a later call after give_back) of the card `start` ran on (name its kind,
#             nvidia-h100-x1 for an H100: the file's name holds the GPU's, another card finds none), a start from
#             the artefact file `start` brought back: copy its chunks into .art/ (git-ignored: add /.art/ to
#             .git/info/exclude) and carry .art with the diffusers and python-osc wheels alone (.whl/diffusers-*.whl,
#             .whl/python_osc-*.whl: with PyAV they might not fit 64 MiB); then a warm start      ~3 min
#   misses    the frame-rate targets missed before the text stream: SDXS-512 and SDXL-Turbo (full, tiny), new
#             prompt / seed, overlap off, on and urgent (the text stream at a high priority), baseline  ~7 min
#   tiny      the SDXL-Turbo tiny-VAE targets alone (100 FPS new prompt, 150 new seed): overlap on and urgent,
#             baseline                                                             ~3 min
#   lanes     render lanes through the real daemon (serve --overlap on --render-lanes N), SDXL-Turbo tiny VAE, 4, 3, 2 then
#             1 lanes (the first compiles cold): the OSC-to-frame p50 of a lone change, then a stream of new prompts
#             and a stream of new seeds alone at 250 changes/s (latency --stream-rate --stream-seeds)   ~5-7 min cold
#   lanesbench  the same lanes in bench (--overlap on,lanes2,lanes3,lanes4; FPS from the stream's length: lanes
#             publish in bursts; VRAM after each stream), new prompt / new seed every frame, baseline; then
#             bench/lanes_probe.py (UNets on 1-3 streams at once)   ~4 min warm (after `lanes`), ~7 min cold
#   lone      issue 27's check "the latency of a single change must not grow": the OSC-to-frame p50 of a lone change
#             through the daemon on one machine, SDXL-Turbo tiny VAE with overlap off, on with 4 render lanes, and on
#             (200 changes at 20/s each)   ~5 min cold
#   lonesd    the same for SD-Turbo's full VAE (S13, S14: overlap on 0.33-0.56 ms above off), after the host's floor
#             (the null model): off, on, off, on   ~7-8 min cold
#   lonesdtiny  the same for SD-Turbo's tiny VAE, after the host's floor: off, on, on, off (drift cancels in the means)
#             ~5 min cold (S16: 4.6 min in the order off, on, off, on)
#   streamsdtiny  SD-Turbo tiny, overlap off then on: 200 lone changes, then a stream of 200 new prompts at 250/s
#             (the stream's frame rate with lone batches collected on the render thread)   ~5 min cold
#   issuebase the host's floor, then issue 27's tiny rows (SD-Turbo, SDXL-Turbo) with the code the issue was filed
#             against (9d04f9d, from .base/: carry .base with .whl); this checkout's rows on the same machine are
#             `lonesdtiny`'s and `lone`'s     ~6-7 min cold
#   loneprof  where a lone frame's time goes (bench --modes lone): overlap off, on (a lone frame in one graph since
#             lone_whole), on collected on another thread, and on split into its streams as before (lone_whole off),
#             unprofiled and under the profiler (the CPU before the first kernel, the GPU's span, busy and idle by
#             stream, after the last kernel), SD-Turbo full and tiny, then SDXL-Turbo tiny   ~8-9 min cold
#   lonebench a lone frame with overlap off and on in one process (bench's "lone frame ms": 30 frames, each after a
#             50 ms pause, call to pixels), SD-Turbo full and tiny, then SDXL-Turbo tiny (no baseline)   ~6-8 min cold
#   twotests  issue 31 on a two-GPU kind (nvidia-h100-x2, nvidia-h200-x2): the two devices' render threads capturing and
#             replaying at once (tests/pipeline/test_gpu_two_devices.py), then the one-GPU thread controls
#             (test_gpu_graphs.py)                                                ~4-6 min
#   twochannels  issue 31's frame rates: 4 channels on cuda:0, then 8 channels over both GPUs (--device all), full VAE,
#             a new prompt every frame, 512 px, the same options (total FPS >= 1.9x; each channel's p50)  ~8-9 min cold
#   rest25    what issue 25 still lacks: SD 1.5's full-VAE OSC-to-frame p50 through the daemon, and the fused text
#             Q/K/V's A/B on SDXS (the same bench with --fused-text-qkv on and off, no baseline)   ~4 min
#   denoiser  the SDXL UNet under Inductor's max-autotune (bench --denoiser-compile-mode), tiny VAE, prompt / seed,
#             overlap off and on, baseline: against `misses`' tiny rows (the seed target needs a faster UNet). Cold,
#             the compile outlasts one call (S10: cut at 530 s; the second call, chained on the warm machine, found
#             the first's autotuning and drew its first frame at 475 s): two calls, ~18 min. S10: slower than default
#   epilogue  the same with the GEMMs' pointwise epilogues fused into the Triton templates (max-autotune-epilogue);
#             two chained calls as `denoiser`                                      ~18 min
#   precompile  what a warm start would save with the U-Net loaded precompiled (bench/precompile_probe.py): SDXL's
#             full-size U-Net, torch.compile's first call cold and warm, then aot_compile saved to a file and loaded
#             in a fresh process (no Dynamo tracing), output against eager                    ~4-6 min
#   regions   the blocks compile scope (speed/regions.py) against whole calls on SDXL: frames (bench, baseline;
#             compare with `speed`'s calls rows of the same session), then a cold and a warm start by blocks
#             (compare with `start`'s)                                            ~7 min
#   textoff   the least to compile at start: blocks scope with the text encoders uncompiled (--compile-text off,
#             eager inside the frame graphs): SDXL full + tiny frames (bench, baseline; the text encoders' cost against
#             `regions`' blocks rows, the calls scope's in `misses`/`tiny`), then a cold and a warm start (against
#             `regions`' and `start`'s)                                           ~8 min
#   channels  4 channels on one GPU, overlap on (cold compile) then off (latency --channels 4)  ~8-9 min
#   tinychannels  the same with the tiny VAE (issue 27 item 4 names no VAE)      ~8-9 min
#   baseline  the plain diffusers call alone (SDXL-Turbo, 512, full VAE, eager): for a session whose parts run none  ~1-2 min
#   batchvae  4 channels, full VAE for a frame alone, tiny for batches (--batch-vae tiny), overlap on, then
#             `baseline` (issue 27 item 4; S9: 215 s with the compile cache warm, past 330 s cold)   ~8-9 min cold
#   window    the same with --batch-window-ms 50; chained on the machine `batchvae` warmed: ~4 min, cold ~8 min
#   sd15      SD 1.5 full + tiny VAE and SDXS-512, new prompt / seed every frame, overlap off, on, decode-only
#             (bench, baseline), SDXS again without the fused text Q/K/V (an A/B); the OSC-to-frame p50 of each
#             through the real daemon (issue 25)                                   ~7-8 min
#   sana      SANA-Sprint 0.6B at 1024 (bench, baseline) and 512 (bench, overlap off, on, decode-only); OSC-to-frame p50 at 1024
#             (issue 26)                                                          ~5 min
#   tokens    SANA-Sprint 512 and SD 1.5 tiny, prompt / seed, no baseline: the tokenize stage after
#             a tokenizer change, on the machine the GPU tests just warmed (run after `tests`)  ~3-4 min
#   tuning    Inductor's coordinate-descent tuning (TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1) against the
#             default: the SDXL VAE decode alone, then SD-Turbo full-VAE frames, both in one call  ~8-9 min
#   cluster   the Ray hop: OSC-to-frame through one Ray worker against --device cuda (the second of each
#             pair counts: the first compiles; the cluster GPU test runs in `tests`) (issue 30); carry
#             .whl-ray alone (`bench/device_wheels.sh ray`: Ray, diffusers, python-osc)   ~7 min
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
WORK=${GPU_WORK:-/tmp/gpu-work}
DEADLINE=${GPU_DEADLINE_S:-560}
mkdir -p "$OUT" "$WORK"
finish() {  # what comes back: two files, whatever happened
    trap - EXIT TERM INT
    python bench/gpu_summary.py "$WORK" >"$OUT/summary.txt" 2>&1
    cat "$OUT/summary.txt"
    tar czf "$OUT/gpu-run.tar.gz" -C "$WORK" . 2>/dev/null
}
trap finish EXIT TERM INT
export PYTHONUNBUFFERED=1
TB="python -m bridge"
CACHE=/tmp/tbc  # one compile cache per call: later steps of a part reuse what earlier ones compiled
# The gzipped artefact file `start` brings back: it must also travel, in a `carried` call's 64 MiB working tree,
# beside the repository (~12 MiB) and two wheels (~6 MiB); 3 chunks of 15 MiB.
ART_MAX_MIB=45

step() {  # step NAME LIMIT_S CMD...: run with a time limit, log to $WORK/NAME.log, note rc and seconds
    local name=$1 limit=$2 start rc left
    shift 2
    left=$(( DEADLINE - SECONDS - 25 ))  # room for the kill, the summary and the archive
    if (( left < 20 )); then echo "$name skipped: the deadline" | tee -a "$WORK/steps.txt"; return 0; fi
    (( limit > left )) && limit=$left
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc $(( $(date +%s) - start ))s" | tee -a "$WORK/steps.txt"
    return 0
}

part_tests() { _gpu_tests 0 1; part_budget; }  # every file at once, then the memory budget alone

# Halves for two calls on one warm machine: 17 files compiling at once on 16 cores ran past 500 s each
# (test_gpu_ip_adapter in run S14, test_gpu_sana in S15: 154 and 139 s alone) and left the memory budget 43 s.
part_tests1() { part_budget; _gpu_tests 0 2; }  # the budget first, while nothing else runs
part_tests2() { _gpu_tests 1 2; }

_gpu_tests() {  # every EVERY-th file with a GPU test from index FIRST, one process each, at once; 500 s each
    local first=$1 every=$2 files i n
    export TORCHINDUCTOR_CACHE_DIR=/tmp/tb-inductor TRITON_CACHE_DIR=/tmp/tb-triton  # shared: same demo graphs
    # every file with a GPU test (a new one runs without being listed here), the memory budget's apart
    mapfile -t files < <(grep -rl --include='test_*.py' 'mark\.gpu' tests | grep -v '/test_memory_budget\.py$' | sort)
    echo "test files: ${#files[@]} + test_memory_budget, every $every from $first" | tee -a "$WORK/steps.txt"
    for ((i = first; i < ${#files[@]}; i += every)); do
        n=$(basename "${files[i]}" .py)
        step "$n" 500 python -m pytest -q -m gpu "${files[i]}" -p no:cacheprovider --junitxml="$WORK/junit-$n.xml" &
    done
    wait
    # a later part of the same call (`start`, `textoff`...) measures its own cold caches under its --cache-dir
    unset TORCHINDUCTOR_CACHE_DIR TRITON_CACHE_DIR
}

part_budget() {  # the memory-budget GPU test file alone (it reads the device's memory in use: nothing else may run)
    step test_memory_budget 80 python -m pytest -q -m gpu tests/bench/test_memory_budget.py -p no:cacheprovider \
        --junitxml="$WORK/junit-test_memory_budget.xml"
}

part_speed() {
    step bench-sdxl 300 $TB bench --model random --sizes 512 --vaes full,tiny --modes prompt,seed --overlap off,on,decode \
        --frames 60 --cache-dir $CACHE --json "$WORK/bench-sdxl.json"
    for overlap in off on; do
        step "latency-sdxl-full-overlap-$overlap" 110 $TB latency --model random --count 200 --rate 20 \
            --stream-rate 200 --json "$WORK/latency-sdxl-full-overlap-$overlap.json" -- --cache-dir $CACHE --overlap $overlap
    done
}

part_kernels() {  # where a stage's time goes inside it, kernel by kernel (issue 27)
    step kernels-sdxl 200 $TB bench --model random --modes kernels --sizes 512 --vaes full --frames 10 --no-baseline \
        --cache-dir $CACHE --json "$WORK/kernels-sdxl.json"
    step kernels-sdxs 100 $TB bench --model random-sdxs --modes kernels --sizes 512 --vaes full --frames 10 \
        --no-baseline --cache-dir $CACHE --json "$WORK/kernels-sdxs.json"
}

part_timeline() {  # GPU idle or streams slowing each other: the 1.5 ms a frame above the UNet (issue 27)
    step bench-timeline 300 $TB bench --model random --sizes 512 --vaes tiny --modes timeline --frames 40 --no-baseline \
        --cache-dir $CACHE --json "$WORK/bench-timeline.json"
}

part_lanes() {  # issue 27's tiny-VAE targets through the daemon: consecutive frames' UNets on several streams at once
    local lanes limit=200  # the first compiles cold (~100 s) and captures every lane's graphs
    for lanes in 4 3 2 1; do
        step "latency-tiny-lanes$lanes" $limit $TB latency --model random --vae tiny --count 200 --rate 20 \
            --stream-rate 250 --stream-seeds --json "$WORK/latency-tiny-lanes$lanes.json" -- --cache-dir $CACHE \
            --overlap on --render-lanes $lanes
        limit=100
    done
}

part_lanesbench() {  # the same lanes in bench (each frame's begin and the lanes' VRAM), then the UNet probe
    step bench-lanes 280 $TB bench --model random --sizes 512 --vaes tiny --modes prompt,seed \
        --overlap on,lanes2,lanes3,lanes4 --frames 60 --cache-dir $CACHE --json "$WORK/bench-lanes.json"
    # the bench's compile cache: the probe compiles the UNet as the renderer does
    step lanes-probe 200 env TORCHINDUCTOR_CACHE_DIR=$CACHE/compile/inductor TRITON_CACHE_DIR=$CACHE/compile/triton \
        python bench/lanes_probe.py --json "$WORK/lanes-probe.json"
}

lone_rows() {  # ROW...: each "MODEL VAE LABEL LIMIT_S SERVE-OPTIONS", 200 lone changes at 20/s through the daemon
    local set model vae label limit opts
    for set in "$@"; do
        read -r model vae label limit opts <<<"$set"
        # shellcheck disable=SC2086  # $opts: several serve options
        step "latency-lone-$model-$vae-$label" "$limit" $TB latency --model "$model" --vae "$vae" --count 200 --rate 20 \
            --json "$WORK/latency-lone-$model-$vae-$label.json" -- --cache-dir $CACHE $opts
    done
}

part_lone() {  # a lone change's latency, overlap and lanes against none, on one machine (the issue's table: another)
    # the first row compiles cold (run S13: 138 s to ready, then 200 changes and the shutdown); four lanes capture
    # three more graphs at start. SD-Turbo's rows are `lonesd`'s (S13 ran them here: with them the steps' limits
    # passed the call's deadline and its last row was cut)
    lone_rows "random tiny off 190 --overlap off" "random tiny on4 90 --overlap on --render-lanes 4" \
              "random tiny on 75 --overlap on"
}

part_lonesd() {  # SD-Turbo's lone change, full VAE: off, on, off, on (on was 0.33-0.56 ms above off in S13 and S14),
    # after the host's floor (the daemon without GPU work: what a lone change costs outside its render varies by host).
    # Limits from run S14 (H100): a cold first row 137 s to ready, a warm one 41-52 s, then 200 changes (10 s) and the
    # shutdown; S14's 60-s limits cut three rows
    step latency-lone-null 40 $TB latency --model null --count 200 --rate 20 --json "$WORK/latency-lone-null.json"
    lone_rows "random-sd full off 200 --overlap off" "random-sd full on 85 --overlap on" \
              "random-sd full off2 85 --overlap off" "random-sd full on2 85 --overlap on"
}

part_lonesdtiny() {  # the same for SD-Turbo's tiny VAE, after the host's floor: off, on, on, off. Run S16 (off, on,
    # off, on) had on 0.16 ms above off in the means, but each mode's later row was the slower one: in this order a
    # steady drift adds as much to the two offs as to the two ons, so their means compare (a cold row 114 s, warm ~50 s)
    step latency-lone-null 40 $TB latency --model null --count 200 --rate 20 --json "$WORK/latency-lone-null.json"
    lone_rows "random-sd tiny off 200 --overlap off" "random-sd tiny on 85 --overlap on" \
              "random-sd tiny on2 85 --overlap on" "random-sd tiny off2 85 --overlap off"
}

part_streamsdtiny() {  # SD-Turbo tiny through the daemon, overlap off then on: 200 lone changes at 20/s, then a stream of
    # 200 new prompts at 250/s. A lone batch is collected on the render thread (overlap_queue's lone collect); a
    # stream's next change ends its poll and it is handed to the publishing thread: the stream's FPS must hold
    local overlap limit=200  # the first compiles cold (S16: a cold row 114 s to ready)
    for overlap in off on; do
        step "latency-stream-sd-tiny-overlap-$overlap" $limit $TB latency --model random-sd --vae tiny --count 200 \
            --rate 20 --stream-rate 250 --json "$WORK/latency-stream-sd-tiny-overlap-$overlap.json" -- \
            --cache-dir $CACHE --overlap $overlap
        limit=110
    done
}

# The code issue 27 was filed against (9d04f9d, main on 2026-11-30: its `latency` made the issue's table), for its
# OSC-to-frame rows on this machine. Put it in .base/ (git-ignored: add /.base/ to .git/info/exclude) and carry .base:
#   rm -rf .base && mkdir .base && git archive 9d04f9d bridge | tar -x -C .base
# `python -m bridge` in .base runs that code (the working directory comes before PYTHONPATH), and so does the daemon
# its latency starts. That code has no --overlap: its one mode is today's off.
base_row() {  # MODEL VAE LIMIT_S: 200 lone changes at 20/s through the old daemon
    ( cd .base && step "latency-base-$1-$2" "$3" $TB latency --model "$1" --vae "$2" --count 200 --rate 20 \
        --json "$WORK/latency-base-$1-$2.json" -- --cache-dir /tmp/tbc-base )
}

part_issuebase() {  # the host's floor, then the issue's tiny rows with the old code; this checkout's rows on the same
    # machine come from `lonesdtiny` (SD-Turbo) and `lone` (SDXL-Turbo), chained in the same session
    if [[ ! -d .base/bridge ]]; then
        echo "issuebase skipped: no .base/bridge (see base_row)" | tee -a "$WORK/steps.txt"
        return 0
    fi
    step latency-lone-null 40 $TB latency --model null --count 200 --rate 20 --json "$WORK/latency-lone-null.json"
    base_row random-sd tiny 240  # cold compiles (S16: a cold SD-Turbo tiny row 114 s to ready; SDXL's 138 s)
    base_row random tiny 260
}

part_loneprof() {  # where a lone frame's time goes: overlap off, on, on collected on another thread and on split
    # (bench --modes lone: the same graphs in one process, unprofiled then under the profiler: the CPU before the first
    # kernel, the GPU's span, busy and idle by stream and kernel category, after the last kernel): SD-Turbo full and
    # tiny, where a lone change took longer with overlap on (split, S13 and S14); then SDXL-Turbo tiny, where it did not
    step bench-lone-prof-sd 320 $TB bench --model random-sd --sizes 512 --vaes full,tiny --modes lone --frames 30 \
        --no-baseline --cache-dir $CACHE --json "$WORK/bench-lone-prof-sd.json"
    step bench-lone-prof-sdxl-tiny 220 $TB bench --model random --sizes 512 --vaes tiny --modes lone --frames 30 \
        --no-baseline --cache-dir $CACHE --json "$WORK/bench-lone-prof-sdxl-tiny.json"
}

part_lonebench() {  # a lone frame overlap off against on in one process (bench's lone column: the same compiled graphs,
    # no daemon), SD-Turbo full and tiny, then SDXL-Turbo tiny: where S13's SD-Turbo full +0.56 ms would come from
    step bench-lone-sd 330 $TB bench --model random-sd --sizes 512 --vaes full,tiny --modes prompt,seed \
        --overlap off,on --frames 30 --cache-dir $CACHE --json "$WORK/bench-lone-sd.json"
    step bench-lone-sdxl-tiny 200 $TB bench --model random --sizes 512 --vaes tiny --modes prompt --overlap off,on \
        --frames 30 --no-baseline --cache-dir $CACHE --json "$WORK/bench-lone-sdxl-tiny.json"
}

part_twotests() {  # issue 31: needs two GPUs (the two-device file skips itself with one)
    export TORCHINDUCTOR_CACHE_DIR=/tmp/tb-inductor TRITON_CACHE_DIR=/tmp/tb-triton
    nvidia-smi -L >"$WORK/gpus.txt" 2>&1
    for n in test_gpu_two_devices test_gpu_graphs; do
        step "$n" 260 python -m pytest -q -m gpu "tests/pipeline/$n.py" -p no:cacheprovider -rs \
            --junitxml="$WORK/junit-$n.xml"
    done
    unset TORCHINDUCTOR_CACHE_DIR TRITON_CACHE_DIR
}

part_twochannels() {  # issue 31: 8 channels on two GPUs against 4 on one, the same daemon options, in one call
    step channels4-one-gpu 330 $TB latency --model random --vae full --size 512 --channels 4 --seconds 12 \
        --json "$WORK/channels4-one-gpu.json" -- --cache-dir $CACHE --device cuda:0
    step channels8-two-gpus 220 $TB latency --model random --vae full --size 512 --channels 8 --seconds 12 \
        --json "$WORK/channels8-two-gpus.json" -- --cache-dir $CACHE --device all
}

part_autotune() {  # the VAE decode alone under max-autotune (the other knobs ran in S4)
    step decode-autotune 200 $TB bench --model random --modes decode --sizes 512 --no-baseline \
        --vae-compile-modes default,max-autotune-no-cudagraphs --cache-dir $CACHE --json "$WORK/decode-autotune.json"
}

part_more() { part_kernels; part_autotune; }

part_start() {
    rm -rf /tmp/tbs
    step start-cold 200 $TB latency --model random --count 20 --rate 20 --json "$WORK/start-cold.json" -- \
        --cache-dir /tmp/tbs --compile-artifacts on
    rm -rf /tmp/tbs/compile/inductor /tmp/tbs/compile/triton  # a fresh machine that carries only the file
    step start-artifacts 120 $TB latency --model random --count 20 --rate 20 --json "$WORK/start-artifacts.json" -- \
        --cache-dir /tmp/tbs --compile-artifacts on
    step start-warm 120 $TB latency --model random --count 20 --rate 20 --json "$WORK/start-warm.json" -- \
        --cache-dir /tmp/tbs
    ls -la /tmp/tbs/compile/artifacts >"$WORK/artifacts.txt" 2>&1
    # for a fresh machine (`carried`), in chunks under the 16 MiB a file that comes back may have
    if ! tar czf /tmp/artifacts.tgz -C /tmp/tbs/compile artifacts 2>>"$WORK/artifacts.txt"; then
        echo "artifacts: no file to bring back" | tee -a "$WORK/steps.txt"
    elif (( $(stat -c %s /tmp/artifacts.tgz) > ART_MAX_MIB << 20 )); then
        echo "artifacts: $(( $(stat -c %s /tmp/artifacts.tgz) >> 20 )) MiB gzipped, over the $ART_MAX_MIB MiB a" \
            "carried call can take: not brought back" | tee -a "$WORK/steps.txt"
    else
        split -b 15m /tmp/artifacts.tgz "$OUT/artifacts.tgz.part-"
    fi
    ls -la /tmp/artifacts.tgz "$OUT"/artifacts.tgz.part-* >>"$WORK/artifacts.txt" 2>&1
}

part_carried() {  # a fresh machine whose only compile cache is the carried artefact file (.art/, from `start`)
    rm -rf /tmp/tbs-carried
    mkdir -p /tmp/tbs-carried/compile
    if ! cat .art/artifacts.tgz.part-* | tar xzf - -C /tmp/tbs-carried/compile; then
        echo "carried: the chunks in .art/ make no whole archive (none, or some missing: run the start part first" \
            "and carry .art)" | tee -a "$WORK/steps.txt"
        return 0
    fi
    ls -la /tmp/tbs-carried/compile/artifacts >"$WORK/artifacts-carried.txt" 2>&1
    step start-carried 150 $TB latency --model random --count 20 --rate 20 --json "$WORK/start-carried.json" -- \
        --cache-dir /tmp/tbs-carried --compile-artifacts on
    step start-carried-warm 100 $TB latency --model random --count 20 --rate 20 --json "$WORK/start-carried-warm.json" \
        -- --cache-dir /tmp/tbs-carried --compile-artifacts on
}

part_misses() {  # after `tests` on the same machine when device time is short: the two benches of the misses
    step bench-sdxs 100 $TB bench --model random-sdxs --sizes 512 --vaes full --modes prompt,seed --overlap off,on,urgent \
        --frames 100 --cache-dir $CACHE --json "$WORK/bench-sdxs.json"
    step bench-sdxl 300 $TB bench --model random --sizes 512 --vaes full,tiny --modes prompt,seed --overlap off,on,urgent \
        --frames 60 --cache-dir $CACHE --json "$WORK/bench-sdxl.json"
}

part_tiny() {  # the tiny VAE's targets alone (run S7 measured the denoiser's split GroupNorms here: no gain, removed)
    step bench-sdxl-tiny 250 $TB bench --model random --sizes 512 --vaes tiny --modes prompt,seed --overlap on,urgent \
        --frames 60 --cache-dir $CACHE --json "$WORK/bench-sdxl-tiny.json"
}

part_rest25() {
    step latency-sd15-full 150 $TB latency --model random-sd15 --vae full --size 512 --count 200 --rate 20 \
        --json "$WORK/latency-sd15-full.json" -- --cache-dir $CACHE
    for fused in on off; do
        step "bench-sdxs-qkv-$fused" 80 $TB bench --model random-sdxs --sizes 512 --vaes full --modes prompt \
            --overlap off,on --frames 100 --no-baseline --fused-text-qkv $fused --cache-dir $CACHE \
            --json "$WORK/bench-sdxs-qkv-$fused.json"
    done
}

denoiser_bench() {  # NAME MODE: alone in a call, autotuning every matrix product and convolution shape of the UNet
    step "$1" 540 $TB bench --model random --sizes 512 --vaes tiny --modes prompt,seed --overlap off,on \
        --frames 60 --denoiser-compile-mode "$2" --cache-dir "/tmp/$1" --json "$WORK/$1.json"
}
part_denoiser() { denoiser_bench bench-sdxl-tiny-autotune max-autotune-no-cudagraphs; }
part_epilogue() { denoiser_bench bench-sdxl-tiny-epilogue max-autotune-epilogue; }

part_regions() {  # the blocks compile scope (issue 27, start-up): its frames, then its cold and warm starts
    step bench-sdxl-blocks 230 $TB bench --model random --sizes 512 --vaes full --modes prompt,seed --overlap off,on \
        --frames 60 --compile-scope blocks --cache-dir /tmp/tbr --json "$WORK/bench-sdxl-blocks.json"
    rm -rf /tmp/tbs-blocks
    step start-cold-blocks 170 $TB latency --model random --count 20 --rate 20 --json "$WORK/start-cold-blocks.json" -- \
        --cache-dir /tmp/tbs-blocks --compile-scope blocks
    step start-warm-blocks 100 $TB latency --model random --count 20 --rate 20 --json "$WORK/start-warm-blocks.json" -- \
        --cache-dir /tmp/tbs-blocks --compile-scope blocks
}

part_precompile() {  # each step a fresh process on one Inductor cache: cold, warm, save, load
    export TORCHINDUCTOR_CACHE_DIR=/tmp/tbp/inductor TRITON_CACHE_DIR=/tmp/tbp/triton
    rm -rf /tmp/tbp
    step precompile-cold 170 python bench/precompile_probe.py compile /tmp/tbp/unet.aot
    step precompile-warm 70 python bench/precompile_probe.py compile /tmp/tbp/unet.aot
    step precompile-save 170 python bench/precompile_probe.py save /tmp/tbp/unet.aot
    step precompile-load 70 python bench/precompile_probe.py load /tmp/tbp/unet.aot
    unset TORCHINDUCTOR_CACHE_DIR TRITON_CACHE_DIR
}

part_textoff() {  # the start-up targets (issue 27): no Dynamo trace of the text encoders, the U-Net by blocks
    step bench-sdxl-textoff 250 $TB bench --model random --sizes 512 --vaes full,tiny --modes prompt,seed \
        --overlap off,on --frames 60 --compile-scope blocks --compile-text off --cache-dir /tmp/tbt \
        --json "$WORK/bench-sdxl-textoff.json"
    rm -rf /tmp/tbs-textoff
    step start-cold-textoff 150 $TB latency --model random --count 20 --rate 20 --json "$WORK/start-cold-textoff.json" \
        -- --cache-dir /tmp/tbs-textoff --compile-scope blocks --compile-text off
    step start-warm-textoff 100 $TB latency --model random --count 20 --rate 20 --json "$WORK/start-warm-textoff.json" \
        -- --cache-dir /tmp/tbs-textoff --compile-scope blocks --compile-text off
}

part_sd15() {
    step bench-sd15 170 $TB bench --model random-sd15 --sizes 512 --vaes full,tiny --modes prompt,seed --overlap off,on,decode \
        --frames 100 --cache-dir $CACHE --json "$WORK/bench-sd15.json"
    step bench-sdxs 100 $TB bench --model random-sdxs --sizes 512 --vaes full --modes prompt,seed --overlap off,on,decode \
        --frames 100 --cache-dir $CACHE --json "$WORK/bench-sdxs.json"
    # the A/B of the fused text Q/K/V (on by default since S5, first run on a card here): the same bench without it
    step bench-sdxs-unfused 80 $TB bench --model random-sdxs --sizes 512 --vaes full --modes prompt --overlap off,on \
        --frames 100 --no-baseline --fused-text-qkv off --cache-dir $CACHE --json "$WORK/bench-sdxs-unfused.json"
    step latency-sd15-tiny 80 $TB latency --model random-sd15 --vae tiny --size 512 --count 200 --rate 20 \
        --json "$WORK/latency-sd15-tiny.json" -- --cache-dir $CACHE
    step latency-sdxs 70 $TB latency --model random-sdxs --size 512 --count 200 --rate 20 \
        --json "$WORK/latency-sdxs.json" -- --cache-dir $CACHE
}

part_sana() {
    step bench-sana-1024 280 $TB bench --model random-sana --sizes 1024 --modes prompt,seed --frames 50 \
        --cache-dir $CACHE --json "$WORK/bench-sana-1024.json"
    step bench-sana-512 130 $TB bench --model random-sana --sizes 512 --modes prompt,seed --overlap off,on,decode --frames 50 \
        --no-baseline --cache-dir $CACHE --json "$WORK/bench-sana-512.json"
    step latency-sana-1024 110 $TB latency --model random-sana --size 1024 --count 100 --rate 10 \
        --json "$WORK/latency-sana-1024.json" -- --cache-dir $CACHE
}

part_cluster() {
    # each side twice: the first of the call compiles (or loads the cache), the second counts; 180 + 180 + 90 + 90
    # s: the part's 550 (tests/cluster/test_cluster_gpu.py runs in `tests`, with every other GPU test file)
    for side in cuda ray cuda2 ray2; do
        local args=(--device cuda) limit=180
        [[ $side == ray* ]] && args=(--cluster ray --cluster-workers 1)
        [[ $side == *2 ]] && limit=90
        step "cluster-$side" "$limit" $TB latency --model random --size 512 --count 300 --rate 20 \
            --json "$WORK/latency-cluster-$side.json" -- --cache-dir $CACHE "${args[@]}"
    done
}

part_tokens() {  # after the GPU tests of a stop: the tokenizer's share of a prompt change, no baselines
    step bench-sana-512 130 $TB bench --model random-sana --sizes 512 --modes prompt,seed --frames 50 --no-baseline \
        --cache-dir $CACHE --json "$WORK/bench-sana-512.json"
    step bench-sd15-tiny 120 $TB bench --model random-sd15 --sizes 512 --vaes tiny --modes prompt,seed --overlap off,on,decode \
        --frames 100 --no-baseline --cache-dir $CACHE --json "$WORK/bench-sd15-tiny.json"
}

part_tuning() {  # Inductor's coordinate-descent tuning of its own Triton kernels (GroupNorm, SiLU, adds): the
    # decode's time outside the convolutions (run S4); diffusers' SDXL recipe turns it on. Same call, same cache.
    step decode-default 50 $TB bench --model random --modes decode --sizes 512 --no-baseline --cache-dir $CACHE \
        --json "$WORK/decode-default.json"
    step decode-coordinate 140 env TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 $TB bench --model random --modes decode \
        --sizes 512 --no-baseline --cache-dir $CACHE --json "$WORK/decode-coordinate.json"
    step bench-sd-default 130 $TB bench --model random-sd --sizes 512 --vaes full --modes prompt,seed --frames 60 \
        --no-baseline --cache-dir $CACHE --json "$WORK/bench-sd-default.json"
    step bench-sd-coordinate 200 env TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 $TB bench --model random-sd --sizes 512 \
        --vaes full --modes prompt,seed --frames 60 --no-baseline --cache-dir $CACHE --json "$WORK/bench-sd-coordinate.json"
}

channels4_run() {  # VAE OVERLAP LIMIT_S: one run of 4 channels on one GPU (one alone, then all four)
    step "channels4-$1-overlap-$2" "$3" $TB latency --model random --vae "$1" --size 512 --channels 4 --seconds 12 \
        --json "$WORK/channels4-$1-overlap-$2.json" -- --cache-dir $CACHE --device cuda:0 --overlap "$2"
}
# Overlap on first, with the cold compile of the single and batch graphs (~250 s on an H100: with off first,
# off's cold compile was cut at 260 s and on then finished in 247 s from the cache off had warmed); off then
# finds most of it compiled. 330 + 220: the part's 550 s; but step() keeps 25 s of GPU_DEADLINE_S (560) for the
# summary, so when on runs to its 330 s (plus the set-up's seconds) off gets about 195 s, not 220.
channels4() { channels4_run "$1" on 330; channels4_run "$1" off 220; }
part_channels() { channels4 full; }
part_tinychannels() { channels4 tiny; }  # the tiny decoder: a batch's decode no longer scales with its rows
part_baseline() {  # [LIMIT_S]: the plain diffusers call alone (SDXL-Turbo, 512, one step, full VAE), for parts with none
    step baseline "${1:-120}" $TB bench --model random --sizes 512 --vaes full --modes prompt --overlap off \
        --compile off --frames 20 --cache-dir $CACHE --json "$WORK/bench-baseline.json"
}
# Run S9 (H100): a daemon that meets a batch size it has not seen captures its graphs while the channels wait; with
# `--batch-vae tiny` cold: start-up 147 s, batch 2's capture 124 s, batch 4's about 96 (cut at 330 s); with the
# compile cache warm the whole run took 215 s (start-up 41 s, batch 2 20 s). So each run below gets a cold call's
# time of its own; chained on the warm machine (within its 30 s) a second finds the first's cache.
part_batchvae() {  # the full VAE for a frame alone, the tiny one for a batch of channels' frames (issue 27 item 4)
    step channels4-batchvae 450 $TB latency --model random --vae full --size 512 --channels 4 --seconds 12 \
        --json "$WORK/channels4-batchvae.json" -- --cache-dir $CACHE --device cuda:0 --overlap on --batch-vae tiny
    part_baseline 100  # last (450 + 100: the part's 550 s): what the deadline leaves, about a minute, eager
}
part_window() {  # the same with rounds that wait for the channels of the round before (--batch-window-ms)
    step channels4-batchvae-window 540 $TB latency --model random --vae full --size 512 --channels 4 --seconds 12 \
        --json "$WORK/channels4-batchvae-window.json" -- --cache-dir $CACHE --device cuda:0 --overlap on \
        --batch-vae tiny --batch-window-ms 50
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$WORK/gpu.txt" 2>&1
python -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" >>"$WORK/gpu.txt" 2>&1
# The device machine's copy of .git can be older than the tree it runs: the caller names the commit.
echo "commit ${GPU_COMMIT:-not given (pass GPU_COMMIT=\$(git rev-parse --short HEAD) from the checkout)}" >>"$WORK/gpu.txt"
for part in "$@"; do
    case $part in
        tests|tests1|tests2|baseline|speed|misses|tiny|precompile|rest25|denoiser|epilogue|more|kernels|timeline|autotune|start|carried|textoff|regions|channels|tinychannels|batchvae|window|sd15|sana|cluster|tokens|tuning|lanes|lanesbench|lone|lonesd|lonesdtiny|streamsdtiny|issuebase|loneprof|lonebench|twotests|twochannels|budget) "part_$part" ;;
        *) echo "unknown part $part: tests, tests1, tests2, baseline, speed, misses, tiny, precompile, rest25, denoiser, epilogue, more (= kernels autotune), timeline, start, carried, textoff, regions, channels, tinychannels, batchvae, window, sd15, sana, cluster, tokens, tuning, lanes, lanesbench, lone, lonesd, lonesdtiny, streamsdtiny, issuebase, loneprof, lonebench, twotests, twochannels, budget" >&2; exit 2 ;;
    esac
done
