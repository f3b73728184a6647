"""What packed tokens buy on this CPU: a training step and a forward pass of the pretrained
MiniLM cut to a student, padded batches against the same batches packed
(modeling.PACK_MIN_PADDING), at several padding shares.

    .venv/bin/python bench/packing.py --layers 3 --threads 1

Batches come from GLUE MRPC train (the scripts' tokenisation): `shuffled` is what training
runs (each batch padded to its own longest row); `spread k` takes every k-th row of the
length-sorted split, so a smaller k gives less padding. Each line gives the padding share
and the padded / packed seconds per step and their ratio (> 1: packing is faster); the smallest
shares show where packing stops paying, which sets PACK_MIN_PADDING. Run it on a quiet machine;
`--json` writes the figures with the CPU's name.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402,F401  (puts src/ on sys.path)
import BERT.pytorch_pretrained_bert.modeling as modeling  # noqa: E402
from BERT.pytorch_pretrained_bert import BertAdam, BertTokenizer  # noqa: E402
from speed.workloads import DEFAULT_GLUE, minilm_dir  # noqa: E402
from utils.features import convert_examples_to_features, train_batches  # noqa: E402
from utils.glue import get_task  # noqa: E402
from utils.modeling import build_student  # noqa: E402

SPREADS = (1, 4, 16, 64)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=3, help="student layers (default: 3)")
    p.add_argument("--model_type", default="Original", choices=["Original", "SPS"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--steps", type=int, default=6, help="timed batches per setting (default: 6)")
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


def seconds_per_step(model, features, batches, train, min_padding):
    """Mean seconds over the batches after one untimed warm-up batch."""
    modeling.PACK_MIN_PADDING = min_padding
    model.train(train)
    opt = BertAdam(model.parameters(), lr=2e-5, warmup=0.1, t_total=1000)
    total = 0.0
    for i, index in enumerate([batches[0]] + batches):
        b = features.batch(index)
        start = time.perf_counter()
        with torch.set_grad_enabled(train):
            out = model(b["input_ids"], b["token_type_ids"], b["attention_mask"],
                        output_all_encoded_layers=train)
            if train:
                F.cross_entropy(out.logits, b["labels"]).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        total += (time.perf_counter() - start) if i else 0.0
    return total / len(batches)


def main(argv=None):
    args = build_parser().parse_args(argv)
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
    print(f"{cpu_name()}, {args.threads} thread(s), "
          f"{args.layers}-layer {args.model_type} student of {model_dir.name}")
    print(f"{'batches':<10} {'padding':>8} {'mode':<6} {'padded s':>9} {'packed s':>9} {'ratio':>6}")
    for name, batches in batch_sets(features, args.steps).items():
        share = padding_share(features, batches)
        for train in (True, False):
            padded = seconds_per_step(model, features, batches, train, None)
            packed = seconds_per_step(model, features, batches, train, 0.0)
            mode = "train" if train else "infer"
            rows.append({"batches": name, "padding": share, "mode": mode,
                         "padded_s": padded, "packed_s": packed, "ratio": padded / packed})
            print(f"{name:<10} {share:>8.3f} {mode:<6} {padded:>9.3f} {packed:>9.3f} "
                  f"{padded / packed:>6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "threads": args.threads,
                                               "layers": args.layers, "rows": rows}, indent=1))


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
