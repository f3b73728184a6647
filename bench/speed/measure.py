"""One config's measurements: ours and transformers on the same weights and batches.

Each repeat runs every measurement once, alternating who goes first so that drifts in machine
state hit both sides alike; results are medians over repeats. A warm-up repeat comes first
(allocator, oneDNN primitives, the Linear path probe, compilation) and sets how many repeats fit
the time budget.
"""
import contextlib
import statistics
import time

import torch

from BERT.pytorch_pretrained_bert import BertConfig
from utils.distill import LIVE_TEACHER
from utils.modeling import build_classifier

from .machine import LoadMeter
from .peak import forward_flops
from .runners import (AMP_DTYPES, Frozen, Ours, Theirs, distill_objective, hf_twin, live_objective,
                      run_one, switches)
from .workloads import FIXED_LEN, make_workloads, plan_for

# name: (layers, model type). Full size has BERT-base's width; --quick a tiny one, same roles.
CONFIGS = {"student3": (3, "Original"), "sps3": (3, "SPS"), "base": (12, "Original")}
FULL_SIZE = dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072)
QUICK_SIZE = dict(hidden_size=128, num_attention_heads=2, intermediate_size=512)
QUICK_LAYERS = {"student3": 2, "sps3": 2, "base": 4}
# relative cost of a config's measurements, to share the time budget
COST = {"student3": 1.0, "sps3": 2.0, "base": 1.8}
# the budget cuts repeats to no fewer: a paired interval (report.py) needs 3 pairs
MIN_PAIRS = 3


def measurement_list(impls, objectives=()):
    """(mode, workload, impl, variant, objective) in the order one repeat runs them; each name in
    `objectives` (kd, pkd, live_<method>) is one more training step of ours on the MRPC mix."""
    out = []
    for mode, workload in (("train", "fixed128"), ("infer", "fixed128"), ("train", "mrpc"),
                           ("infer", "mrpc")):
        if workload == "fixed128":
            variants = [("fixed", i) for i in impls]
        else:
            variants = [("dynamic", i) for i in impls] + [("default", "hf")]
        out += [(mode, workload, impl, variant, None) for variant, impl in variants]
        if mode == "train" and workload == "mrpc":
            out += [(mode, workload, "ours", "dynamic", k) for k in objectives]
            if any(k.startswith("live_") for k in objectives):
                # the teacher's forward alone on the same batches: what a live step adds at most
                out.append(("teacher_fwd", workload, "teacher", "dynamic", None))
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


def twin_models(name, quick, device):
    """(config, model type, ours, transformers' twin with ours' weights) of config `name`,
    --quick's tiny size when `quick`; seeded, so every benchmark builds the same weights."""
    layers, model_type = CONFIGS[name]
    config = BertConfig(30522, num_hidden_layers=QUICK_LAYERS[name] if quick else layers,
                        **(QUICK_SIZE if quick else FULL_SIZE))
    torch.manual_seed(0)
    ours_model = build_classifier(config, 2, model_type).to(device)
    return config, model_type, ours_model, hf_twin(ours_model, model_type, 2).to(device)


def repeats_within(budget_s, warm_s, wanted):
    """How many timed repeats fit `budget_s` after a warm-up of `warm_s` (a repeat costs about
    the warm-up): `wanted` if they fit, else as many as fit but never under MIN_PAIRS (fewer
    give the targets no interval, only a point to compare), nor more than `wanted`."""
    if warm_s * (1 + wanted) <= budget_s:  # the warm-up is in the share
        return wanted
    return min(wanted, max(MIN_PAIRS, int(budget_s / warm_s) - 1))


def bench_config(name, args, device, features, amp, budget_s, clock, log):
    """Every measurement of config `name` at one precision, within `budget_s` seconds.

    Returns the config's record for the JSON: plan, parity of ours and theirs, FLOPs per
    sample, optimizers, repeats, the load other processes put on the machine, and per
    measurement (key_of) the median samples/s, tokens/s and every run's seconds.
    """
    config, model_type, ours_model, theirs_model = twin_models(name, args.quick, device)
    layers = config.num_hidden_layers
    plan = plan_for(name, args, device)
    workloads = make_workloads(features, config, plan, device)
    impls = {"ours": Ours(ours_model, device, amp, args.compile),
             "hf": Theirs(theirs_model, device, amp)}
    contexts = {}
    if args.ablate:
        # the same model with each CPU Linear path forced, the mask skip off; a BertAdam on the
        # foreach path
        impls["ours_mkl"] = impls["ours_onednn"] = impls["ours_mask_always"] = impls["ours"]
        contexts["ours_mkl"] = lambda: switches(LINEAR_PATH="mkl")
        contexts["ours_onednn"] = lambda: switches(LINEAR_PATH="onednn")
        contexts["ours_mask_always"] = lambda: switches(SKIP_FULL_MASK=False)
        impls["ours_foreach_adam"] = Ours(ours_model, device, amp, fused_adam=False)
    objectives = {}
    if name != "base":
        objectives = {k: distill_objective(k, ours_model, len(features), device)
                      for k in ("kd", "pkd")}
        # a teacher running beside the student (each compared method): the 12-layer model of
        # the same width (--quick: the tiny base), random weights
        teacher_config = config.copy(num_hidden_layers=QUICK_LAYERS["base"] if args.quick
                                     else CONFIGS["base"][0])
        torch.manual_seed(1)
        teacher_model = build_classifier(teacher_config, 2).to(device)
        for kind in LIVE_TEACHER:
            objectives[f"live_{kind}"] = live_objective(kind, ours_model, teacher_model, device,
                                                        None if amp == "fp32" else AMP_DTYPES[amp])
        impls["teacher"] = Frozen(teacher_model, device, amp)

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

    steps = measurement_list([i for i in impls if i != "teacher"], list(objectives))
    times = {key_of(m, w, i, v, o, amp): [] for m, w, i, v, o in steps}
    meter = LoadMeter()

    def one_repeat(r, record):
        # alternate who goes first, so that drifts in machine state hit both sides alike
        for mode, workload, impl, variant, obj in (steps if r % 2 == 0 else _swap_pairs(steps)):
            impls[impl].model.train(mode == "train")
            # the teacher's forward runs on the training batches, in eval mode
            batches = workloads[("train" if mode == "teacher_fwd" else mode, workload)][variant]
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
    repeats = args.repeats if args.quick else repeats_within(budget_s, warm, args.repeats)
    if repeats < args.repeats:
        log(f"  ! time budget: {repeats} repeats instead of {args.repeats}")
    if not args.quick and warm * (1 + repeats) > budget_s:
        log(f"  ! over the time budget ({budget_s:.0f} s for this config) with {repeats} "
            f"repeats (at least {MIN_PAIRS} give the targets a paired interval)")
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
