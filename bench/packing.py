"""What packed tokens buy on this CPU: a training step and a forward pass of the pretrained
MiniLM cut to a student, padded batches against the same batches packed
(modeling.PACK_MIN_PADDING), at several padding shares, with a 95% paired interval.

    .venv/bin/python bench/packing.py --layers 3 --threads 1 --reps 8

Batches come from GLUE MRPC train (the scripts' tokenisation): `shuffled` is what training
runs (each batch padded to its own longest row); `spread k` takes every k-th row of the
length-sorted split, so a smaller k gives less padding. Each round times the setting's batches
padded and packed back to back, in alternating order, so load that lasts a round cancels from
its ratio. Each line gives the padding share, the padded / packed seconds per step (medians
over rounds) and the ratio padded / packed (> 1: packing is faster) with its interval and
verdict (grid.stats.paired_ratio); the smallest shares show where packing stops paying, which
sets PACK_MIN_PADDING. `--json` writes the figures and every round's seconds with the machine
(linear.machine_key: CPU model, family, flags, torch).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402,F401  (puts src/ on sys.path)
import BERT.pytorch_pretrained_bert.modeling as modeling  # noqa: E402
from BERT.pytorch_pretrained_bert.linear import machine_key  # noqa: E402
from BERT.pytorch_pretrained_bert import BertAdam, BertTokenizer  # noqa: E402
from grid.stats import paired_ratio  # noqa: E402
from speed.workloads import DEFAULT_GLUE, minilm_dir  # noqa: E402
from utils.features import convert_examples_to_features, train_batches  # noqa: E402
from utils.glue import get_task  # noqa: E402
from utils.checkpoints import write_json  # noqa: E402
from utils.modeling import build_student  # noqa: E402

SPREADS = (1, 4, 16, 64)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=3, help="student layers (default: 3)")
    p.add_argument("--model_type", default="Original", choices=["Original", "SPS"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--steps", type=int, default=6, help="batches per setting (default: 6)")
    p.add_argument("--reps", type=int, default=8,
                   help="timed rounds per setting and mode, each padded and packed (at least 3)")
    p.add_argument("--glue_dir", default=str(DEFAULT_GLUE), help="folder holding MRPC/")
    p.add_argument("--json", default=None, help="write the figures to this file")
    return p


def batch_sets(features, n):
    """{name: [index tensors]}: shuffled training batches and length-sorted spreads."""
    order = torch.argsort(features.lengths, stable=True)
    sets = {"shuffled": train_batches(len(features), 32, torch.Generator().manual_seed(1))[:n]}
    for k in SPREADS:
        starts = torch.linspace(0, len(order) - 32 * k, n).long().tolist()
        sets[f"spread {k}"] = [order[s:s + 32 * k:k] for s in starts]
    return sets


def padding_share(features, batches):
    real = sum(int(features.lengths[b].sum()) for b in batches)
    return 1.0 - real / sum(int(features.lengths[b].max()) * len(b) for b in batches)


def seconds_per_step(model, features, batches, opt, min_padding):
    """Mean seconds per batch over `batches`: a training step with optimizer `opt`, or with
    opt None a forward pass without gradients."""
    modeling.PACK_MIN_PADDING = min_padding
    total = 0.0
    for index in batches:
        b = features.batch(index)
        start = time.perf_counter()
        with torch.set_grad_enabled(opt is not None):
            out = model(b["input_ids"], b["token_type_ids"], b["attention_mask"],
                        output_all_encoded_layers=opt is not None)
            if opt is not None:
                F.cross_entropy(out.logits, b["labels"]).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        total += time.perf_counter() - start
    return total / len(batches)


def measure_setting(model, features, batches, train, reps):
    """Padded (PACK_MIN_PADDING None) against packed (0.0) over `reps` rounds after an untimed
    warm-up batch each; padded goes first in even rounds, packed in odd ones. Training runs with
    dropout and one BertAdam for all rounds, inference in eval mode.

    Returns {padded_s, packed_s (medians), ratio, low, high, verdict, ...: paired_ratio of the
    packed and padded seconds, so ratio > 1 means packing is faster; rounds: each round's
    (padded, packed) seconds}.
    """
    model.train(train)
    opt = BertAdam(model.parameters(), lr=2e-5, warmup=0.1, t_total=1000) if train else None
    for min_padding in (None, 0.0):
        seconds_per_step(model, features, batches[:1], opt, min_padding)
    padded, packed = [], []
    for r in range(reps):
        order = ((None, padded), (0.0, packed))
        for min_padding, times in (order if r % 2 == 0 else order[::-1]):
            times.append(seconds_per_step(model, features, batches, opt, min_padding))
    result = paired_ratio(packed, padded)
    result.update(padded_s=statistics.median(padded), packed_s=statistics.median(packed),
                  rounds=[list(pair) for pair in zip(padded, packed)])
    return result


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.reps < 3:
        raise SystemExit(f"error: --reps {args.reps}: need at least 3 rounds for an interval")
    for flag in ("steps", "threads"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag} {getattr(args, flag)}: use 1 or more")
    torch.set_num_threads(args.threads)
    task = get_task("MRPC")
    model_dir = minilm_dir()
    if not (Path(args.glue_dir) / "MRPC" / "train.tsv").is_file():
        sys.exit(f"MRPC train.tsv not found under {args.glue_dir}; pass --glue_dir or set "
                 "PEAKD_SHARED_GLUE")
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    examples = task.processor.get_examples(Path(args.glue_dir) / "MRPC", "train")
    features = convert_examples_to_features(examples, tokenizer, 128, task)
    torch.manual_seed(0)
    model, _ = build_student(model_dir, 2, args.layers, args.model_type)
    rows = []
    machine = machine_key()  # CPU model, family, flags digest, torch, ISA caps
    print(f"{machine}, {args.threads} thread(s), "
          f"{args.layers}-layer {args.model_type} student of {model_dir.name}, "
          f"{args.reps} rounds of {args.steps} batches")
    print(f"{'batches':<10} {'padding':>8} {'mode':<6} {'padded s':>9} {'packed s':>9} "
          f"{'ratio':>6} {'95% interval':>15}  verdict")
    for name, batches in batch_sets(features, args.steps).items():
        share = padding_share(features, batches)
        for train in (True, False):
            r = measure_setting(model, features, batches, train, args.reps)
            mode = "train" if train else "infer"
            rows.append({"batches": name, "padding": share, "mode": mode, **r})
            interval = f"[{r['low']:.2f}, {r['high']:.2f}]"
            print(f"{name:<10} {share:>8.3f} {mode:<6} {r['padded_s']:>9.3f} "
                  f"{r['packed_s']:>9.3f} {r['ratio']:>6.2f} {interval:>15}  {r['verdict']}")
    if args.json:
        write_json(Path(args.json), {"cpu": machine, "threads": args.threads,
                                     "layers": args.layers, "reps": args.reps,
                                     "steps": args.steps, "torch": torch.__version__,
                                     "rows": rows})
    return rows


if __name__ == "__main__":
    main()
