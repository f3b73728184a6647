"""Training and inference throughput of our BERT against transformers' BERT classifier.

    make bench                       # the full benchmark (7-17 minutes on 2 quiet CPU cores)
    make bench BENCH_ARGS=--quick    # tiny models, one or two batches: checks every code path
    .venv/bin/python bench/throughput.py --help

Measured on the same inputs and weights, interleaving ours and theirs and taking medians over
repeats, for the BERT-base config (12 layers, 768), a 3-layer student and a 3-layer SPS student:
  * training samples/s (forward, loss, backward, optimizer step) and inference samples/s;
  * at fixed length 128 (random ids, no padding) and on the real length mix of GLUE MRPC dev:
    ours and transformers both on batches padded to their own longest row ("dynamic"; rounded
    up to a multiple of 8 on CUDA, as the scripts do), and transformers at its default padding
    to 128;
  * a KD and a PKD step (utils.distill's objective) against a plain fine-tuning step;
  * model FLOP utilisation (MFU) against the matmul peak measured here;
  * the scripts' own path: finetune.py on MRPC in a fresh process, first epoch included (fp32,
    bf16 and fp16 on CUDA; a few fp32 steps on a CPU).
The parts live in bench/speed/ (its __init__ lists them); this file parses flags and runs them.

Writes bench/results/throughput.json (git-ignored) and prints a table and a verdict per target:
PASS, FAIL or not decided, from the repeats' paired interval (speed/report.py).
"""
import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402,F401  (puts src/ on sys.path)
import BERT.pytorch_pretrained_bert.linear as fast_linear  # noqa: E402
from BERT.pytorch_pretrained_bert import atomic_write  # noqa: E402
from speed import ROOT  # noqa: E402
from speed.machine import Clock, check_machine  # noqa: E402
from speed.measure import CONFIGS, COST, bench_config  # noqa: E402
from speed.peak import measure_peaks  # noqa: E402
from speed.report import evaluate_targets, fmt, print_report  # noqa: E402
from speed.scripts import bench_scripts, print_scripts  # noqa: E402
from speed.workloads import DEFAULT_GLUE, load_mrpc_dev, minilm_dir  # noqa: E402
from utils.allocator import keep_freed_memory  # noqa: E402
from utils.args import Parser, RawHelpFormatter, add_compile_arg  # noqa: E402

RESULTS = ROOT / "bench" / "results"
AMPS = ("fp32", "bf16", "fp16")


def build_parser():
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=RawHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny models, one or two batches, two repeats: checks the code paths")
    p.add_argument("--force", action="store_true", help="run even when the machine is busy")
    p.add_argument("--max_load", type=float, default=0.10,
                   help="refuse when other processes use more than this fraction of all CPUs")
    p.add_argument("--configs", default="student3,sps3,base",
                   help="comma list of student3, sps3, base ('' for the scripts' path only)")
    p.add_argument("--batch", type=int, default=None,
                   help="training and inference batch size of every config (default 32; "
                        "BERT-base trains on 8 on a CPU; 8 with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats after one warm-up (default 3; 2 with --quick)")
    p.add_argument("--budget_min", type=float, default=13.0,
                   help="fewer repeats (never under 3) when the warm-ups say the run would "
                        "take longer")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run (auto: CUDA when there is a GPU)")
    p.add_argument("--amp", default=None,
                   help="comma list of fp32, bf16, fp16 (torch.amp autocast); default fp32 on "
                        "the CPU, fp32,bf16,fp16 on CUDA")
    p.add_argument("--bf16", action="store_true", help="the same as --amp bf16")
    add_compile_arg(p, "our model (transformers stays eager, the baseline)")
    p.add_argument("--ablate", action="store_true",
                   help="also time ours with each CPU Linear path forced (mkl, onednn) and "
                        "each other speed measure off (mask skip, fused BertAdam)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default all)")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="cpu: this process's CPU time: robust to other load, with --threads 1 "
                        "only")
    p.add_argument("--glue_dir", default=str(DEFAULT_GLUE),
                   help="folder holding MRPC/dev.tsv (default: $PEAKD_SHARED_GLUE or "
                        "../shared/glue_data)")
    s = p.add_argument_group("the scripts' own path (speed/scripts.py)")
    s.add_argument("--no_scripts", action="store_true",
                   help="skip finetune.py in a fresh process")
    s.add_argument("--bert_model", default=None,
                   help="pretrained BERT for finetune.py (default: the MiniLM package)")
    s.add_argument("--script_epochs", type=float, default=1.0,
                   help="epochs of each finetune.py run")
    s.add_argument("--script_max_steps", type=int, default=None,
                   help="stop each run after this many steps (default: none on CUDA; 10 on a "
                        "CPU, 2 with --quick)")
    s.add_argument("--script_timeout", type=float, default=600.0,
                   help="seconds before one finetune.py run is stopped")
    p.add_argument("--out", default=None, help="JSON file (default bench/results/"
                                               "throughput.json; throughput-quick.json)")
    return p


def check_args(args, cuda):
    """Fills defaults that depend on others; exits with one `error:` line on a bad value or
    combination."""
    for name in ("threads", "batch", "repeats", "script_max_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            sys.exit(f"error: --{name} {value} must be >= 1")
    for name in ("budget_min", "max_load", "script_epochs", "script_timeout"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            sys.exit(f"error: --{name} {value} must be a number > 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: this torch sees no CUDA GPU; use --device cpu or auto")
    if args.clock == "cpu" and (args.threads or torch.get_num_threads()) > 1:
        sys.exit("error: --clock cpu measures one thread's CPU time: add --threads 1 (or use "
                 "--clock wall)")
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.bf16:
        amps = ["bf16"]
    elif args.amp:
        amps = [a.strip() for a in args.amp.split(",")]
    else:
        amps = list(AMPS) if cuda else ["fp32"]
    if set(amps) - set(AMPS) or ("fp16" in amps and not cuda):
        sys.exit(f"error: --amp {','.join(amps)}: use fp32, bf16, and fp16 on CUDA only")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if set(configs) - set(CONFIGS) or not (configs or not args.no_scripts):
        sys.exit(f"error: --configs {args.configs}: choose from {', '.join(CONFIGS)}")
    if args.bert_model is None:
        args.bert_model = str(minilm_dir())
    if not args.no_scripts and not any((Path(args.bert_model) / name).is_file()
                                       for name in ("config.json", "bert_config.json")):
        sys.exit(f"error: --bert_model {args.bert_model} has no config.json: pass a pretrained "
                 "model folder")
    return amps, configs


def machine_meta(args, device, amps):
    """What the figures were measured on: device (GPU name, CUDA and cuDNN versions), torch."""
    import transformers
    cuda = device.type == "cuda"
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
        "argv": sys.argv[1:], "device": str(device),
        "device_name": (torch.cuda.get_device_name() if cuda
                        else platform.processor() or platform.machine()),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "clock": args.clock, "amp": amps, "compile": args.compile,
        "cpu_linear": None if cuda else fast_linear.chosen_paths(),
        # set here if not yet (as the scripts and speed.runners.Ours do on the CPU)
        "malloc_keeps_freed": None if cuda else keep_freed_memory(),
        "notes": [
            "fixed128: random ids, 128 real tokens per row (no padding)",
            "mrpc: GLUE MRPC dev; training batches shuffled (seed 0), inference batches "
            "length-grouped (as src/utils/evaluation.py runs them), each padded to its own longest "
            "row (rounded up to utils.device.PAD_MULTIPLE of the device); hf default pads every "
            "row to 128 (timed on one full batch: all cost the same)",
            "ours: BertAdam as src/utils/train.py; hf: clip_grad_norm_(1.0) + AdamW, as the "
            "transformers Trainer steps",
            "MFU = forward matmul FLOPs x 3 (training) or x 1 (inference) x samples/s / peak; "
            "the target's peak: on CUDA bf16; on a CPU bf16 for bf16 autocast, else the better "
            "fp32 matmul of torch.mm (MKL) and oneDNN (fp32_best)",
            "base trains on batches of 8 on a CPU (a 32 x 128 step takes seconds): see plan",
            "scripts: finetune.py in a fresh process; samples/s from its eval_results.json",
        ]}


def main(argv=None):
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    amps, configs = check_args(args, cuda)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    load_before = check_machine(args)
    meta = {**machine_meta(args, device, amps), "load_before": load_before}
    log(f"{meta['device_name']} ({device}), {meta['threads']} threads, torch {meta['torch']}"
        f"{', CUDA ' + meta['cuda'] if cuda else ''}, transformers {meta['transformers']}; "
        f"other processes use {fmt(load_before['foreign_busy_fraction'], '.0%')} of the machine")
    report = {"meta": meta, "amps": {}}
    if configs:
        features = load_mrpc_dev(args.glue_dir)
        log(f"MRPC dev: {len(features)} examples, mean length "
            f"{features.lengths.float().mean():.1f}")
        clock = Clock(args.clock, device)
        report["peaks"] = peaks = measure_peaks(device, args, clock, amps)
        for k, v in peaks.items():
            log(f"matmul peak {k}: {v['flops_best'] / 1e9:.1f} GFLOP/s ({v['backend']}, "
                f"{v['n']}^2 {v['dtype']})")
    budget = args.budget_min * 60
    for a, amp in enumerate(amps if configs else ()):
        peak_key = "bf16" if cuda or amp == "bf16" else "fp32_best"
        cfgs = {}
        for i, name in enumerate(configs):
            left = budget - (time.perf_counter() - t0)
            todo = sum(COST[c] for c in configs[i:]) + (len(amps) - a - 1) * sum(
                COST[c] for c in configs)
            log(f"{name} ({amp})")
            cfgs[name] = bench_config(name, args, device, features, amp,
                                      left * COST[name] / todo, clock, log)
        rows, targets = evaluate_targets(cfgs, peaks, amp, peak_key, gpu=cuda)
        report["amps"][amp] = {"configs": cfgs, "targets": targets, "rows": rows,
                               "mfu_peak": peak_key}
        print_report(meta, cfgs, rows, targets, amp, peak_key)
    if not args.no_scripts:
        env = None
        if args.threads:
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        report["scripts"] = bench_scripts(args, cuda, amps, log, env)
        print_scripts(report["scripts"])
    finish(args, report, t0, log)
    failed = [amp for amp, run in (report.get("scripts") or {}).get("runs", {}).items()
              if run.get("returncode") != 0]
    if failed:
        sys.exit(f"error: finetune.py failed in the scripts' path ({', '.join(failed)}); its "
                 "output is above and in the JSON")
    return report


def finish(args, report, t0, log):
    """Marks the run contaminated when other processes loaded the machine; writes the JSON."""
    meta = report["meta"]
    loads = [c["foreign_load_max"] for r in report["amps"].values()
             for c in r["configs"].values() if c["foreign_load_max"] is not None]
    meta["foreign_load_max"] = max(loads) if loads else None
    meta["contaminated"] = bool(
        (loads and max(loads) > args.max_load)
        or (meta["load_before"]["foreign_busy_fraction"] or 0) > args.max_load)
    meta["seconds"] = time.perf_counter() - t0
    if meta["contaminated"]:
        print(f"\n!! other processes used up to {meta['foreign_load_max'] or 0:.0%} of the "
              "machine while it ran: these figures are contaminated", file=sys.stderr)
    if args.quick:
        print("\n(--quick: tiny models; the figures check the code paths, not the targets)")
    out = Path(args.out) if args.out else RESULTS / (
        "throughput-quick.json" if args.quick else "throughput.json")
    text = json.dumps(report, indent=1, default=str) + "\n"
    atomic_write(out, lambda f: f.write(text.encode("utf-8")))
    log(f"wrote {out} ({meta['seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
