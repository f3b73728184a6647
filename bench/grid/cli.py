"""The grid's command line: every flag of bench/reproduce.py with its help, and the settings
header of results.md (what made the table)."""
from grid.plan import KINDS, PAPER_VARIANTS, VARIANTS
from grid.protocols import DEFAULT_PROTOCOL, PROTOCOLS
from grid.run import ORDERS
from utils.args import SELECT_RULES, TASK_NAMES, HelpFormatter, Parser, str2bool


# a working example of each pass-through flag (the help texts show them; a test runs each)
EXTRA_EXAMPLES = {"teacher": "--warmup_proportion 0.2", "teacher_outputs": "--eval_batch_size 128",
                  "ptp": "--warmup_proportion 0.2", "layer": "--bf16",
                  "student": "--warmup_proportion 0.2"}


def build_parser(description=None):
    """bench/reproduce.py's flags (`description`: its docstring's first paragraph)."""
    p = Parser(description=description, formatter_class=HelpFormatter)
    p.add_argument("--task", required=True,
                   help="GLUE task (case-insensitive): " + ", ".join(TASK_NAMES))
    p.add_argument("--bert_model", required=True,
                   help="pretrained model folder (BERT or MPNet) the teacher and students "
                        "start from")
    p.add_argument("--data_dir", required=True, help="folder holding <TASK>/train.tsv")
    p.add_argument("--work_dir", required=True, help="where runs and results go")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL,
                   help=f"one of {', '.join(PROTOCOLS)}: named settings (grid/protocols.py): authors_hparams, the released "
                        "code's hyperparameters with standard schedules; authors_exact, its "
                        "schedule, data order and evaluation too; quick, for smoke runs. Each "
                        "flag marked (protocol) defaults to it")
    # None = "the protocol's value"; see grid/protocols.py
    p.add_argument("--seeds", default=None, help="student seeds, e.g. 1,2,3,4,5 (protocol)")
    p.add_argument("--variants", default=",".join(PAPER_VARIANTS),
                   help="comma list of student variants: " + ", ".join(VARIANTS)
                        + " (the compared methods: docs/baselines.md)")
    p.add_argument("--student_hidden_layers", type=int, default=3,
                   help="physical layers of every student (an SPS student runs twice as many)")
    p.add_argument("--teacher_epochs", type=float, default=None,
                   help="teacher fine-tuning epochs (protocol)")
    p.add_argument("--teacher_lr", type=float, default=None,
                   help="teacher learning rate (protocol)")
    p.add_argument("--teacher_seed", type=int, default=None, help="teacher seed (protocol)")
    p.add_argument("--epochs", type=float, default=None, help="student epochs (protocol)")
    p.add_argument("--lr", type=float, default=None, help="student learning rate (protocol)")
    p.add_argument("--ptp_epochs", type=float, default=None, help="PTP stage epochs (protocol)")
    p.add_argument("--ptp_lr", type=float, default=None,
                   help="PTP stage learning rate (protocol)")
    p.add_argument("--ptp_thresholds", default=None,
                   help="PTP thresholds: median, t1,t2, or table (PTP.py's per-task table, "
                        "tuned for BERT-base teachers) (protocol)")
    p.add_argument("--train_batch_size", type=int, default=None,
                   help="examples per optimizer step, every stage (protocol)")
    p.add_argument("--schedule_epochs", type=float, default=None,
                   help="students' schedule length in epochs, as finetune.py "
                        "--schedule_epochs (protocol)")
    p.add_argument("--ptp_schedule_epochs", type=float, default=None,
                   help="the PTP stage's schedule length in epochs (protocol)")
    p.add_argument("--schedule_applied_twice", type=str2bool, default=None,
                   help="true/false: students step with lr x w^2, as the released "
                        "finetune.py (protocol)")
    p.add_argument("--no_shuffle", type=str2bool, default=None,
                   help="true/false: students and PTP train in file order (protocol)")
    p.add_argument("--eval_steps", type=int, default=None,
                   help="students evaluate every N steps besides each epoch's end (protocol; "
                        "authors_exact: every step on MRPC)")
    p.add_argument("--ptp_eval_steps", type=int, default=None,
                   help="the PTP stage evaluates every N steps (protocol)")
    p.add_argument("--eval_start_epoch", type=int, default=None,
                   help="students' first epoch (1-based) with evaluations (protocol)")
    p.add_argument("--select_metric", default=None,
                   help="the metric that chooses students' *_acc checkpoints (protocol; "
                        "authors_exact: f1 on MRPC)")
    p.add_argument("--select", default="dev", choices=SELECT_RULES,
                   help="what chooses every checkpoint (teacher, PTP, students): dev, or "
                        "train_slice, a stratified 10%% of train held out of every stage, with "
                        "dev scored at the chosen checkpoint and its best score recorded beside")
    p.add_argument("--max_seq_length", type=int, default=128,
                   help="tokens per example in every stage")
    p.add_argument("--max_steps", type=int, default=None,
                   help="optimizer steps per run at most (smoke tests)")
    for kind, (script, flag) in KINDS.items():
        p.add_argument(flag, default="",
                       help=f"more {script} flags for every {kind} stage, as one "
                            f"shell-quoted string, e.g. {flag}=\"{EXTRA_EXAMPLES[kind]}\"")
    p.add_argument("--teacher_from", default=None, metavar="WORK_DIR",
                   help="take the finished teacher and teacher outputs of another grid's work "
                        "folder (linked, not copied; made with this grid's teacher settings), "
                        "for a study with new seeds, say")
    p.add_argument("--records_dir", default=None, metavar="DIR",
                   help="keep each finished stage's results, settings and logs (no weights) "
                        "in DIR, and restore the runs kept there into a new --work_dir: for a "
                        "study over machines that lose their disks (DIR in git, say)")
    p.add_argument("--jobs", type=int, default=1,
                   help="stages run at once (CPU: cores // jobs threads each; several GPUs: "
                        "one per process)")
    p.add_argument("--cores", type=int, default=None,
                   help="the CPU cores this grid's stages share, cores // jobs threads each "
                        "(default: all; with --jobs 1 the caller's OMP_NUM_THREADS). Give each "
                        "of two grids on one machine its share, e.g. --cores 1 on 2 cores")
    p.add_argument("--order", choices=ORDERS, default=ORDERS[0],
                   help="which ready stage starts first: chain (default), the longest chain of "
                        "work across all seeds, the shortest grid; seed, every stage of the "
                        "first seed before the next seed's, so a grid stopped part-way leaves "
                        "whole seeds to table")
    p.add_argument("--no_feature_cache", action="store_true",
                   help="tokenise the data in every stage (default: once per split into "
                        "WORK/cache, PEAKD_FEATURE_CACHE)")
    p.add_argument("--no_forkserver", action="store_true",
                   help="start each stage in a new interpreter (default: fork it from one "
                        "process that imported torch once, which saves each stage about 1.6 s "
                        "on a CPU; src/utils/launch.py)")
    p.add_argument("--no_plot", action="store_true",
                   help="write no results.png (matplotlib is then not needed)")
    p.add_argument("--report_only", action="store_true",
                   help="write the tables and chart from the stages finished so far (in WORK, "
                        "or kept in --records_dir: a study's tables on a machine that has "
                        "trained nothing), run none (results.md names the stages still missing)")
    p.add_argument("--progress_only", action="store_true",
                   help="print which stages have finished (in WORK, or kept in --records_dir) "
                        "with their wall times and no dev values, run none, change nothing: "
                        "for a study that must not see its results before its last seed")
    return p


def settings_header(args, given):
    """The resolved settings, for results.md, so a table says how it was made."""
    keys = list(PROTOCOLS[args.protocol]) + ["select", "variants", "student_hidden_layers",
                                             "max_seq_length", "max_steps"]
    shown = ", ".join(f"{k} {getattr(args, k)}" + (" (given)" if k in given else "")
                      for k in keys)
    extra = "; ".join(f"{flag} {getattr(args, flag[2:])!r}" for _, flag in KINDS.values()
                      if getattr(args, flag[2:]))
    if args.teacher_from:
        shown += f", teacher from {args.teacher_from}"
    return (f"# {args.task}: protocol `{args.protocol}`\n\n{shown}"
            + (f"; {extra}" if extra else "") + "\n\n")
