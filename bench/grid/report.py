"""The grid's results: one row per run (results.csv), mean ± std per variant and the paired
comparisons of the paper's claims (results.md), PTP label counts, and the chart."""
import json
from pathlib import Path

import pandas as pd

from utils.ptp import PTP_LABEL_NAMES

from .plan import VARIANTS
from .stats import METHOD_CLAIMS, compare_claims

# a PTP class under this share of the train examples makes the 4-way task near-degenerate
MIN_PTP_SHARE = 0.02


def ptp_summary(stage):
    """Thresholds and train label counts a PTP run recorded in PTP.args.json (PTP.py), and the
    problem when a class holds under MIN_PTP_SHARE of the train examples (else None); the same
    problem reads alike for every run, and ptp_warning names the runs that have it."""
    args = json.loads((stage.ptp_dir / "PTP.args.json").read_text(encoding="utf-8"))
    t1, t2 = args.get("ptp_thresholds_used") or (None, None)
    counts = (args.get("ptp_label_counts") or {}).get("train")
    info = {"ptp_t1": t1, "ptp_t2": t2,
            "ptp_train_counts": "/".join(map(str, counts)) if counts else None}
    problem = None
    if counts and min(counts) < MIN_PTP_SHARE * sum(counts):
        small = [f"{name} {n}" for name, n in zip(PTP_LABEL_NAMES, counts)
                 if n < MIN_PTP_SHARE * sum(counts)]
        problem = (f"PTP class under {MIN_PTP_SHARE:.0%} of {sum(counts)} train examples "
                   f"({', '.join(small)}); counts {info['ptp_train_counts']} "
                   f"({', '.join(PTP_LABEL_NAMES)}) from thresholds t1={t1:.4f}, t2={t2:.4f}; "
                   f"try --ptp_thresholds median")
    return info, problem


def ptp_warning(labels, problem):
    """The warning line for the PTP runs `labels` that share `problem` (ptp_summary)."""
    return f"warning: {', '.join(labels)}: {problem}"


def ptp_warnings(ptp):
    """ptp's warnings ({label: (info, problem)}), one per distinct problem, naming every run
    that has it: a grid's PTP runs share one teacher file and thresholds, so they warn alike."""
    runs = {}
    for label, (_, problem) in ptp.items():
        if problem:
            runs.setdefault(problem, []).append(label)
    return [ptp_warning(labels, problem) for problem, labels in runs.items()]


def collect(stages):
    """One row per finished planned run (the teacher first) from its eval_results.json; PTP
    variants also get their PTP run's thresholds and train label counts. Returns (frame,
    {PTP stage label: (info, warning)})."""
    ptp = {s.label: ptp_summary(s) for s in stages if s.kind == "ptp" and s.done.exists()}
    ptp_of = {s.ptp_dir: s.label for s in stages if s.kind == "ptp"}
    rows = []
    for stage in stages:
        if stage.kind not in ("teacher", "student") or not stage.done.exists():
            continue
        res = json.loads(stage.done.read_text(encoding="utf-8"))
        scored, best_dev, rule = scores(res)
        row = {"variant": stage.variant or "teacher", "seed": stage.seed or "-",
               "metric": res["main_metric"], "select": rule,
               **{k: v for k, v in scored.items() if k not in ("epoch", "step")},
               # the paper's kind of number: dev's best over the run (= the score under dev
               # selection; beside a train-slice choice, the dev-selected score it avoids)
               "best_dev": best_dev,
               "best_epoch": scored.get("epoch"), "num_parameters": res["num_parameters"],
               "effective_layers": res["effective_layers"],
               "train_seconds": res["train_seconds"],
               "eval_seconds": res.get("eval_seconds"),
               # the stage's process from start to exit (None for a run recorded without it)
               "wall_seconds": read_wall(stage.record),
               "train_samples_per_second": res["train_samples_per_second"],
               "inference_samples_per_second": res.get("inference_samples_per_second"),
               "code": res.get("code"),  # the git commit that made the run
               "machine": res.get("machine")}  # its CPU (float rounding depends on it)
        if stage.ptp_dir is not None and ptp_of[stage.ptp_dir] in ptp:
            row.update(ptp[ptp_of[stage.ptp_dir]][0])
        rows.append(row)
    # the teacher, then seed by seed in VARIANTS order (the plan runs a seed's PTP chain first)
    rank = {v: i for i, v in enumerate(VARIANTS)}
    rows.sort(key=lambda r: (-1, 0) if r["seed"] == "-" else (int(r["seed"]), rank[r["variant"]]))
    return pd.DataFrame(rows), ptp


def scores(res):
    """(dev metrics at the checkpoint the run chose, dev's main metric at its best evaluation,
    the selection rule) of one eval_results.json. Under --select train_slice the slice chose
    and dev was only scored; runs made before selections were recorded chose on dev."""
    best = res["best_acc"] or {}
    selection = res.get("selection") or {"rule": "dev", "split": None}
    metric = res["main_metric"]
    if selection["rule"] == "dev":
        return best, best.get(metric), "dev"
    chosen = res.get("chosen_acc") or {}
    dev = next((k for k in chosen if k != selection["split"]), None)
    peak = (res.get("best_by_split") or {}).get(dev) or {}
    return chosen.get(dev) or {}, peak.get(metric), selection["rule"]


def read_wall(record):
    """A stage's wall time from its grid record (None where the grid did not time it)."""
    try:
        return json.loads(record.read_text(encoding="utf-8")).get("wall_seconds")
    except (OSError, ValueError):
        return None


def progress(stages, records_dir=None):
    """Which stages have finished, with their wall times and no dev values: a table of seeds by
    stage (PTP run and variants) under a line for the teacher's stages. For a study that must
    not look at its results before its last seed. A stage counts as finished in the work folder;
    a seed's stage also when kept in `records_dir` (grid/records.py; the teacher's stages are
    trained again on a new machine, so only the work folder counts for them). A stage whose
    results exist but whose record the grid has not yet written (at the stage's exit) is
    "finishing" and not counted."""
    def state(stage):
        record = stage.record
        if stage.done.exists() and not record.is_file():
            return "finishing"
        if not stage.done.exists():
            kept = Path(records_dir) / stage.label if records_dir and stage.seed else None
            if kept is None or not (kept / stage.done.name).is_file():
                return "not yet"
            record = kept / stage.record.name
        wall = read_wall(record)
        return "done (wall time not recorded)" if wall is None else f"done ({wall:.0f} s)"

    head = [f"{s.label}: {state(s)}" for s in stages if s.seed is None]
    columns, cells = [], {}
    for stage in stages:
        if stage.seed is not None:
            column = stage.label.replace(f"_seed{stage.seed}", "")
            columns += [column] if column not in columns else []
            cells[stage.seed, column] = state(stage)
    seeds = sorted({seed for seed, _ in cells}, key=int)
    finished = sum(all(cells.get((seed, c), "done").startswith("done") for c in columns)
                   for seed in seeds)
    lines = ["; ".join(head) + ".", "",
             f"{finished} of {len(seeds)} seeds finished (every stage of the seed).", "",
             "| seed | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {seed} | " + " | ".join(cells.get((seed, c), "-") for c in columns) + " |"
              for seed in seeds]
    return "\n".join(lines) + "\n"


def variant_order(frame):
    return ["teacher"] + [v for v in VARIANTS if v in set(frame["variant"])]


def summarize(frame):
    """Mean and std per variant of every numeric column, as a Markdown table."""
    order = variant_order(frame)
    numeric = [c for c in frame.columns if c not in ("variant", "seed", "metric", "best_epoch")
               and not c.startswith("ptp_") and pd.api.types.is_numeric_dtype(frame[c])]
    grouped = frame.groupby("variant")[numeric]
    mean, std, n = grouped.mean(), grouped.std().fillna(0.0), grouped.size()
    lines = ["| variant | runs | " + " | ".join(numeric) + " |",
             "|---|---|" + "---|" * len(numeric)]
    for v in order:
        cells = []
        for c in numeric:
            if pd.isna(mean.loc[v, c]):
                # e.g. wall_seconds of a variant whose every run was resumed (no whole wall time)
                cells.append("-")
            elif c in ("num_parameters", "effective_layers"):
                cells.append(f"{mean.loc[v, c]:,.0f}")
            elif c.endswith(("seconds", "per_second")):
                cells.append(f"{mean.loc[v, c]:.1f}")
            else:
                cells.append(f"{mean.loc[v, c]:.4f} ± {std.loc[v, c]:.4f}")
        lines.append(f"| {v} | {n[v]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_table(frame, metric, with_f1=True):
    """The dev metric of every run as Markdown, a row per variant and a column per seed, with
    the mean over the seeds it ran; F1 in parentheses where the task has it besides the main
    metric (MRPC) and `with_f1`. A seed a variant has not finished shows "-"."""
    second = ("f1" if with_f1 and metric != "f1" and "f1" in frame and frame["f1"].notna().any()
              else None)
    columns = [metric, second] if second else [metric]
    seeds = sorted({s for s in frame["seed"] if s != "-"}, key=int)

    def cell(values):
        first, *rest = values  # the metric, then F1 where shown
        return f"{first:.4f}" + "".join(f" ({x:.4f})" for x in rest)

    shown = f"{metric} ({second} in parentheses)" if second else metric
    lines = [f"Dev {shown} of the checkpoint each run selected.\n",
             "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for v in variant_order(frame):
        runs = frame.loc[frame["variant"] == v].set_index("seed")[columns].astype(float)
        cells = [cell(runs.loc[s]) if s in runs.index else "-" for s in seeds]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {cell(runs.mean())} |")
    return "\n".join(lines) + "\n"


def claim_scores(frame, metric):
    """{variant: {seed: dev metric}} of the student runs."""
    students = frame[frame["variant"] != "teacher"]
    return {v: dict(zip(g["seed"], g[metric].astype(float)))
            for v, g in students.groupby("variant")}


def comparisons(frame, metric, grain=None, claims=None):
    """The paper's claims (or `claims`, e.g. stats.METHOD_CLAIMS) on `metric` (a column: the
    chosen checkpoints' dev score, or best_dev), those whose variants ran, Holm-adjusted over
    the table; grain: one dev example in the metric's units."""
    return compare_claims(claim_scores(frame, metric), claims, grain=grain)


# results.md's claim tables: (claims, on best-on-dev scores) -> heading
CLAIM_HEADINGS = {
    ("paper", False): "The paper's claims, paired over shared seeds",
    ("paper", True): "The same claims on best-on-dev scores (dev chose these)",
    ("methods", False): "The compared methods against PKD and PeaKD, paired over shared seeds",
    ("methods", True): "The compared methods on best-on-dev scores (dev chose these)",
}


def claim_tables(frame, metric, grain=None, best_dev=False):
    """results.md's claim tables as [(heading, rows, score column)]: the paper's claims and the
    compared methods' (stats.METHOD_CLAIMS) on `metric` (the chosen checkpoints' dev score),
    and with best_dev (train-slice selection) each again on the best-on-dev scores. Each table
    is Holm-adjusted on its own; a table none of whose claims' variants ran has no rows."""
    scores = [metric] + (["best_dev"] if best_dev else [])
    return [(CLAIM_HEADINGS[name, score == "best_dev"], comparisons(frame, score, grain, claims),
             score)
            for name, claims in (("paper", None), ("methods", METHOD_CLAIMS)) for score in scores]


def comparisons_table(rows, metric):
    """The paired comparisons as Markdown: one row per claim, with the Holm-adjusted interval
    (its level in the column) and p-value."""
    lines = [f"| claim | a - b ({metric}) | seeds | mean difference | Holm-adjusted interval "
             "(level) | p (Holm) | won / lost / tied | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for c in rows:
        interval = "-" if c.low is None else f"[{c.low:+.4f}, {c.high:+.4f}] ({c.level:.3f})"
        mean = "-" if c.n == 0 else f"{c.mean:+.4f}"
        p = "-" if c.p_holm is None else f"{c.p:.3f} ({c.p_holm:.3f})"
        lines.append(f"| {c.claim} | {c.a} - {c.b} | {c.n} | {mean} | {interval} | {p} | "
                     f"{c.won} / {c.lost} / {c.tied} | {c.verdict} |")
    return "\n".join(lines) + "\n"


def ptp_table(ptp):
    lines = ["| PTP run | t1 | t2 | train labels (" + " / ".join(PTP_LABEL_NAMES) + ") |",
             "|---|---|---|---|"]
    for label, (info, _) in ptp.items():
        t1, t2 = info["ptp_t1"], info["ptp_t2"]
        shown = [f"{t:.4f}" if t is not None else "-" for t in (t1, t2)]
        lines.append(f"| {label} | {shown[0]} | {shown[1]} | {info['ptp_train_counts']} |")
    return "\n".join(lines) + "\n"


def overhead_line(frame):
    """The share of each run's wall time that is not training (process start, tokenising,
    loading the model and teacher file, evaluating), from wall_seconds and train_seconds."""
    if "wall_seconds" not in frame or frame["wall_seconds"].isna().all():
        return ""
    timed = frame.dropna(subset=["wall_seconds"])
    share = 1 - timed["train_seconds"] / timed["wall_seconds"]
    fixed = timed["wall_seconds"] - timed["train_seconds"] - timed["eval_seconds"].fillna(0)
    return (f"\nNot training: {share.median():.0%} of a run's wall time (median over "
            f"{len(timed)} runs, range {share.min():.0%}-{share.max():.0%}); of it, outside "
            f"training and evaluation (start, data, model): median {fixed.median():.1f} s.\n")


def provenance_line(frame, column, label, width=None):
    """Which commits (`code`) or CPUs (`machine`) made the runs, from eval_results.json, so a
    pooled table shows it; `width` shortens each value."""
    if column not in frame:
        return ""
    counts = frame[column].fillna("not recorded").map(lambda c: c[:width]).value_counts()
    return f"\n{label}: " + ", ".join(f"{c} ({n} runs)" for c, n in counts.items()) + ".\n"


VERDICT_RULE = ("Claims are paired over shared seeds and adjusted for their number in the "
                "table (Holm): each interval is at its Holm step's level, so it excludes 0 "
                "exactly when Holm rejects. `supported`: the interval lies above 0; "
                "`contradicted`: below 0; `borderline (not decided)`: it excludes 0 but its near "
                "end lies within one dev example of 0; `not decided`: it contains 0, or has no "
                "width (every seed gave the same difference; `no spread`).\n\n")


def selection_line(frame):
    """What chose the checkpoints, in words, for the top of results.md."""
    rules = set(frame["select"].dropna()) if "select" in frame else {"dev"}
    if rules == {"train_slice"}:
        return ("Checkpoints chosen on a held-out train slice (`--select train_slice`); the "
                "tables score dev once, at the chosen checkpoint. `best_dev` is the best dev "
                "score of the same runs (dev-selected, the paper's kind of number).\n\n")
    if rules == {"dev"}:
        return ("Checkpoints chosen on the dev set that is also reported (`--select dev`): "
                "scores are the best of several dev evaluations, optimistic by that choice.\n\n")
    return f"Mixed selection rules: {sorted(rules)}; compare with care.\n\n"


def markdown(frame, ptp, tables, metric, header=""):
    """results.md: settings header, the selection rule, per-variant and per-seed tables, the
    claim tables (claim_tables: the per-seed best-on-dev scores before the first on them), PTP
    labels and warnings."""
    parts = [header, selection_line(frame), "## Per variant (mean ± std over seeds)\n\n",
             summarize(frame), overhead_line(frame), provenance_line(frame, "code", "Code", 12),
             provenance_line(frame, "machine", "CPU"),
             "\n## Per seed\n\n", seed_table(frame, metric)]
    best_seeds_shown = False
    for heading, rows, score in tables:
        if not rows:
            continue
        parts.append(f"\n## {heading}\n\n")
        if score == "best_dev" and not best_seeds_shown:
            parts += [seed_table(frame, "best_dev", with_f1=False), "\n"]
            best_seeds_shown = True
        parts += [VERDICT_RULE if score == metric else "", comparisons_table(rows, score)]
    if ptp:
        parts += ["\n## PTP labels (train split)\n\n", ptp_table(ptp)]
        parts += [f"\n{w}\n" for w in ptp_warnings(ptp)]
    return "".join(parts)


def plot(frame, rows, path, metric):
    """Three panels: the dev metric per variant (mean ± std over seeds), inference
    samples/s (SPS's cost beside its accuracy), and each claim's paired mean difference with
    its 95% interval."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -r requirements-bench.txt)")
        return
    order = variant_order(frame)
    colors = ["#777"] + ["#4a7ab5"] * (len(order) - 1)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, column, label in ((axes[0], metric, f"dev {metric}"),
                              (axes[1], "inference_samples_per_second", "inference samples/s")):
        stats = frame.groupby("variant")[column].agg(["mean", "std"]).reindex(order).fillna(0.0)
        ax.bar(range(len(order)), stats["mean"], yerr=stats["std"], capsize=4, color=colors)
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
        ax.set_ylabel(label)
        if column == metric:
            low, high = (stats["mean"] - stats["std"]).min(), (stats["mean"] + stats["std"]).max()
            ax.set_ylim(max(-1.0, low - 0.05), min(1.0, high + 0.03))
    ax = axes[2]
    shown = [c for c in rows if c.n]
    palette = {"supported": "#2a9d4a", "contradicted": "#c0392b"}
    for i, c in enumerate(shown):
        err = None if c.low is None else [[c.mean - c.low], [c.high - c.mean]]
        ax.errorbar(c.mean, i, xerr=err, fmt="o", capsize=4,
                    color=palette.get(c.verdict, "#777"))
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(shown)), [f"{c.a} - {c.b} ({c.n})" for c in shown])
    ax.invert_yaxis()
    ax.set_xlabel(f"paired difference in dev {metric} (95% t interval)")
    task = frame.attrs.get("task", "")
    fig.suptitle(f"{task} PeaKD variants (mean ± std over seeds; claims paired by seed)".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
