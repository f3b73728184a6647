"""Checks the paper's ordering on your task and model: one teacher, then every student variant
over several seeds, with the project's own scripts; results tables and a chart at the end.

    python bench/reproduce.py --task MRPC --bert_model DIR --data_dir GLUE_DIR \
        --work_dir bench/results/reproduce-MRPC --protocol authors_hparams --jobs 2

Variants: ft, kd, pkd (plain k-layer students), sps_no_shuffle_pkd, sps_pkd (SPS students),
ptp_pkd, ptp_sps_pkd (PTP start point, then PKD). `--protocol` picks named settings
(grid/protocols.py: `authors_hparams`, the default, `authors_exact` or `quick`); a flag given explicitly wins. Each
finished stage records the settings that made it (grid_stage.json): a repeated command skips
finished stages and continues an interrupted one from its last epoch (--resume), and a command
with other settings in the same work folder is refused. `--report_only` writes the tables from
the stages finished so far without running any (a grid that spans sessions). `--teacher_from`
links the finished teacher of another work folder, for a new study with the same teacher.
`--records_dir` keeps every finished stage's small files (results, settings, logs; no weights)
in a folder that outlives the machine and restores them into a new work folder (grid/records.py).
Writes results.csv (one row per run), results.md (mean ± std per variant, the paper's claims as
paired comparisons over seeds, PTP label counts) and results.png (matplotlib, optional).
"""
import contextlib
import signal
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent / "src"), str(BENCH)]

from grid import plan as grid_plan  # noqa: E402
from grid import records, report  # noqa: E402
from grid.cli import EXTRA_EXAMPLES, settings_header  # noqa: E402,F401 (tests read the examples)
from grid.cli import build_parser as grid_parser  # noqa: E402
from grid.plan import GridError  # noqa: E402
from grid.protocols import apply_protocol  # noqa: E402
from grid.run import run_stages  # noqa: E402
from utils.checkpoints import write_json  # noqa: E402
from utils.errors import PeakdError  # noqa: E402
from utils.locks import folder_lock  # noqa: E402
from utils.device import COMPILE_CACHE_ENV  # noqa: E402
from utils.features import FEATURE_CACHE_ENV  # noqa: E402
from utils.glue import get_task  # noqa: E402
from utils.ptp import PTP_LABEL_NAMES  # noqa: E402


def build_parser():
    return grid_parser(__doc__.split("\n\n")[0])


def prepare(args, lock=None):
    """Resolves the protocol, checks every input and the work folder, and plans the grid,
    before anything runs; then, unless only looking (--progress_only), takes the work folder's
    lock (`lock(work)`: one grid at a time) before its first write. Returns (work, stages,
    flags given explicitly)."""
    try:
        given = apply_protocol(args)
    except ValueError as e:
        raise GridError(str(e)) from None
    depth = grid_plan.check_inputs(args)
    work = Path(args.work_dir).resolve()
    _, stages = grid_plan.plan_grid(args, work, depth)
    grid_plan.check_script_flags(stages)
    links = (grid_plan.check_teacher_link(args.teacher_from, stages, work)
             if args.teacher_from else {})
    if args.records_dir:  # kept runs made otherwise are refused before anything runs
        records.restorable(stages, args.records_dir, work)
    grid_plan.check_finished(stages, work, unrecorded_ok=args.progress_only)
    if lock is not None and not args.progress_only:
        lock(work)
    if links:
        grid_plan.make_links(links, work)
    if args.records_dir and not args.progress_only:
        sync_records(stages, args.records_dir, work)
    return work, stages, given


def progress_line(stages):
    """'Finished n of m stages' and, when some are missing, which (results.md's second line)."""
    missing = [s.label for s in stages if not s.done.exists()]
    line = f"Finished {len(stages) - len(missing)} of {len(stages)} stages"
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8
                                           else "")
        line += f"; not yet: {shown}. A partial grid: its tables cover the finished runs only"
    return line + ".\n\n"


def print_ptp(stage):
    """The PTP run's train label counts and thresholds, and a warning for a near-empty class."""
    info, problem = report.ptp_summary(stage)
    print(f"{stage.label}: PTP train labels {info['ptp_train_counts']} "
          f"({' / '.join(PTP_LABEL_NAMES)}; t1 {info['ptp_t1']:.4f}, t2 {info['ptp_t2']:.4f})",
          flush=True)
    if problem:
        print(report.ptp_warning([stage.label], problem), flush=True)


def sync_records(stages, records_dir, work):
    restored = records.sync(stages, records_dir, work)
    if restored:
        print(f"restored {len(restored)} finished run(s) from {records_dir}: "
              f"{', '.join(restored)}", flush=True)


def after_stage(stage, stages, records_dir, work):
    """What the grid does as each stage finishes: PTP label counts, and its records (the
    teacher's with its outputs, which are checked first; grid/records.py)."""
    if stage.kind == "ptp":
        print_ptp(stage)
    if records_dir and stage.kind == "teacher_outputs":
        sync_records(stages, records_dir, work)
    elif records_dir and stage.kind != "teacher":
        records.keep(stage, records_dir)


def stop_on_sigterm(*_):
    """SIGTERM (a `kill`, a scheduler's stop) ends the grid as Ctrl-C does: its running stages
    are stopped too, instead of running on without it."""
    raise KeyboardInterrupt


def main(argv=None):
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        return run_grid(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_grid(argv=None):
    args = build_parser().parse_args(argv)
    with contextlib.ExitStack() as stack:  # holds the work folder's lock while stages run
        return grid(args, stack)


def grid(args, stack):
    def lock(work):
        try:
            stack.enter_context(folder_lock(work, "--work_dir"))
        except PeakdError as e:
            raise GridError(str(e)) from None

    try:
        work, stages, given = prepare(args, lock)
        if args.progress_only:
            print(report.progress(stages, args.records_dir), end="")
            return None
        if args.report_only:
            if args.records_dir:  # the kept runs count too: no teacher trained to table them
                stages = records.kept_view(stages, args.records_dir, work)
            if not stages[0].done.exists():
                kept = f" nor is it kept in {args.records_dir}" if args.records_dir else ""
                raise GridError(f"--report_only: {stages[0].label} has not finished in "
                                f"{work}{kept}; nothing to tabulate yet")
        else:
            logs = work / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            # one compile cache for every stage (used where a stage passes --compile)
            cache = {COMPILE_CACHE_ENV: str(work / "cache" / "inductor")}
            if not args.no_feature_cache:
                cache[FEATURE_CACHE_ENV] = str(work / "cache")
            run_stages(stages, work, logs, args.jobs, env_extra=cache,
                       on_done=lambda s: after_stage(s, stages, args.records_dir, work),
                       forkserver=not args.no_forkserver, share=args.cores,
                       order=args.order)
    except GridError as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        # run_stages has stopped the stages it started; each keeps its last end-of-epoch state
        print("interrupted: the running stages were stopped; the same command resumes them "
              "from their last saved epoch", file=sys.stderr)
        raise SystemExit(130) from None
    frame, ptp = report.collect(stages)
    frame.attrs["task"] = args.task
    metric = frame["metric"].iloc[0]
    task = get_task(args.task)
    # one dev example in the metric's units (exact for accuracy; MCC and F1 move more per
    # example, so their borderline rule is lenient)
    grain = 1 / len(task.get_examples(args.data_dir, task.dev_splits[0]))
    tables = report.claim_tables(frame, metric, grain, best_dev=args.select == "train_slice")
    frame.to_csv(work / "results.csv", index=False)
    text = report.markdown(frame, ptp, tables, metric,
                           settings_header(args, given) + progress_line(stages))
    (work / "results.md").write_text(text)
    write_json(work / "grid_settings.json", {k: v for k, v in vars(args).items()
                                             if not k.endswith("_list")})
    print(text)
    if not args.no_plot:
        report.plot(frame, tables[0][1], work / "results.png", metric)
    return frame


if __name__ == "__main__":
    main()
