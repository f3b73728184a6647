"""Paired comparisons with a t interval computed here (the project does not depend on scipy):
the paper's claims over seeds, and speed ratios over timed pairs (bench/paired_ratio.py,
bench/packing.py)."""
import math
from dataclasses import dataclass

# (better, worse, claim): each row says "`better` scores higher than `worse`"
CLAIMS = [
    ("ptp_sps_pkd", "pkd", "PeaKD (PTP+SPS+PKD) beats PKD"),
    ("pkd", "kd", "PKD beats KD"),
    ("kd", "ft", "KD beats fine-tuning"),
    ("sps_pkd", "pkd", "SPS helps PKD"),
    ("sps_pkd", "sps_no_shuffle_pkd", "the shuffle helps SPS"),
    ("ptp_pkd", "pkd", "PTP helps PKD"),
    ("ptp_sps_pkd", "sps_pkd", "PTP helps SPS+PKD"),
]


# the compared methods (grid/plan.py METHODS) against PKD and PeaKD, and SPS under each:
# "does SPS's doubled depth help objectives other than PKD?"
METHOD_NAMES = {"tinybert": "TinyBERT", "minilm": "MiniLM", "ckd": "CKD",
                "distil_cos": "DistilBERT's cosine"}
METHOD_CLAIMS = [claim for m, name in METHOD_NAMES.items() for claim in (
    (m, "pkd", f"{name} beats PKD"),
    (m, "ptp_sps_pkd", f"{name} beats PeaKD"),
    (f"sps_{m}", m, f"SPS helps {name}"),
    (f"sps_{m}", "ptp_sps_pkd", f"{name} on SPS beats PeaKD"))]


def t_two_sided_mass(t, df):
    """P(|T| <= t) for Student's t with an integer df >= 1 (t >= 0), in closed form
    (Abramowitz & Stegun 26.7.3-4): with theta = atan(t / sqrt(df)), c = cos(theta)^2,

        df odd:  (2 / pi) * (theta + sin(theta) cos(theta) * (1 + 2/3 c + 2*4/(3*5) c^2 + ...))
                 with the sum's last power c^((df - 3) / 2), and no sum for df = 1;
        df even: sin(theta) * (1 + 1/2 c + 1*3/(2*4) c^2 + ...), last power c^((df - 2) / 2).
    """
    theta = math.atan(t / math.sqrt(df))
    c = math.cos(theta) ** 2
    if df % 2:
        total, term = 0.0, 1.0
        if df > 1:
            total = 1.0
            for k in range(1, (df - 1) // 2):
                term *= c * (2 * k) / (2 * k + 1)
                total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    total, term = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(p, df):
    """The p-quantile (0.5 < p < 1) of Student's t with integer df >= 1, by bisection on
    `t_two_sided_mass` to about 1e-12 (e.g. p 0.975: 12.706 at df 1, 2.776 at df 4)."""
    if not 0.5 < p < 1 or int(df) != df or df < 1:
        raise ValueError(f"need 0.5 < p < 1 and an integer df >= 1, got p {p}, df {df}")
    mass = 2 * p - 1
    low, high = 0.0, 1.0
    while t_two_sided_mass(high, int(df)) < mass:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_two_sided_mass(mid, int(df)) < mass:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


@dataclass
class Comparison:
    """a - b over the n seeds both have: mean difference, paired t interval at `level` (None for
    n < 2), seeds where a won / lost / tied, the verdict, the sample standard deviation of the
    differences, the two-sided p-value of a paired t test and, after `holm`, the Holm-adjusted
    p-value (the interval then is at the Holm step's level)."""
    a: str
    b: str
    claim: str
    n: int
    mean: float
    low: float
    high: float
    won: int
    lost: int
    tied: int
    verdict: str
    sd: float = float("nan")
    p: float = float("nan")
    level: float = 0.95
    p_holm: float = None


# narrower than this is no width: float rounding of equal differences (k/408 - j/408 computed
# twice) leaves ~1e-17 of spread
NO_WIDTH = 1e-12


def verdict(low, high, n):
    """'supported' when the interval lies above 0, 'contradicted' below, else 'not decided'.

    An interval of no width (every seed gave the same difference, s = 0) decides nothing: dev
    accuracy moves in steps of 1 / (dev examples), so equal differences come from that grain as
    often as from a real effect (two MRPC seeds gave ptp_pkd - pkd = -2/408 each). It is 'not
    decided (no spread)'.
    """
    if n < 2:
        return "too few seeds"
    if high - low <= NO_WIDTH:
        return "not decided (no spread)"
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "not decided"


def paired(a_scores, b_scores, a="a", b="b", claim="", level=0.95):
    """Compares two variants over the seeds both have. a_scores, b_scores: {seed: score}.

    d_i = a_i - b_i over shared seeds i (n of them); mean m, sample std s (n - 1);
    interval m -+ t_{(1+level)/2, n-1} * s / sqrt(n) (None for n < 2).
    """
    shared = sorted(set(a_scores) & set(b_scores), key=str)
    diffs = [a_scores[s] - b_scores[s] for s in shared]
    n = len(diffs)
    mean = sum(diffs) / n if n else float("nan")
    low = high = None
    sd = p = float("nan")
    if n >= 2:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        low, high = interval(mean, sd, n, level)
        p = p_value(mean, sd, n)
    return Comparison(a, b, claim, n, mean, low, high, sum(d > 0 for d in diffs),
                      sum(d < 0 for d in diffs), sum(d == 0 for d in diffs),
                      verdict(low, high, n), sd, p, level)


def interval(mean, sd, n, level):
    """mean -+ t_{(1+level)/2, n-1} * sd / sqrt(n)."""
    half = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


def p_value(mean, sd, n):
    """Two-sided p of the paired t test of mean difference 0: P(|T_{n-1}| >= |t|),
    t = mean / (sd / sqrt(n)). With no spread (sd 0) t is undefined and `verdict` decides
    nothing, so p is 1: such a row ranks last in `holm` instead of taking its first step."""
    if sd <= NO_WIDTH:
        return 1.0
    return max(0.0, 1.0 - t_two_sided_mass(abs(mean) / (sd / math.sqrt(n)), n - 1))


def holm(rows, alpha=0.05, grain=None):
    """The rows of one table, adjusted for their number m (Holm's step-down procedure).

    Ranked by p ascending, row i (0-based) is rejected while p < alpha / (m - i), until the
    first row k that fails; every later row fails too. Each row's interval is recomputed at the
    level of its step, 1 - alpha / (m - i) for i < k and 1 - alpha / (m - k) from k on, so that
    an interval excludes 0 exactly when Holm rejects (the intervals of the rows from k on contain
    0, since their p >= p_k >= alpha / (m - k)). The verdict is worded from that interval; `grain` (one dev
    example, in the metric's units) turns an interval whose near end lies within it of 0 into
    "borderline (not decided)". p_holm is the Holm-adjusted p-value
    max_{j <= i} min(1, (m - j) p_(j)). Rows with n < 2 keep their verdict and get no rank.
    """
    tested = sorted((r for r in rows if r.n >= 2), key=lambda r: r.p)
    m = len(tested)
    failed = next((i for i, r in enumerate(tested) if r.p >= alpha / (m - i)), m)
    adjusted = 0.0
    for i, r in enumerate(tested):
        adjusted = max(adjusted, min(1.0, (m - i) * r.p))
        r.p_holm = adjusted
        r.level = 1 - alpha / (m - min(i, failed))
        r.low, r.high = interval(r.mean, r.sd, r.n, r.level)
        r.verdict = verdict(r.low, r.high, r.n)
        if grain and r.verdict in ("supported", "contradicted") and \
                min(abs(r.low), abs(r.high)) < grain:
            r.verdict = "borderline (not decided)"
    return rows


def compare_claims(scores, claims=None, grain=None):
    """The rows of `claims` (default CLAIMS) whose two variants both ran, Holm-adjusted over the
    table (`holm`). scores: {variant: {seed: score}}; grain: one dev example in the metric."""
    return holm([paired(scores[a], scores[b], a, b, claim) for a, b, claim in claims or CLAIMS
                 if a in scores and b in scores], grain=grain)


def paired_ratio(a_seconds, b_seconds, confidence=0.95):
    """How much faster a runs than b over n >= 3 timed pairs: r_i = b_i / a_i (a's rate over
    b's; in bench/paired_ratio.py a is ours and b transformers').

    Returns the geometric mean exp(m) and the interval exp(m -+ t(confidence, n - 1) * s /
    sqrt(n)) of `paired` on the log ratios log r_i = log b_i - log a_i (m their mean, s their
    sample standard deviation); verdict 'faster' when the interval lies above 1, 'slower' when
    below, else 'not decided'.
    """
    if len(a_seconds) != len(b_seconds) or len(a_seconds) < 3:
        raise ValueError(f"need at least 3 pairs of timings, got {len(a_seconds)} and "
                         f"{len(b_seconds)}")
    logs = [math.log(b / a) for a, b in zip(a_seconds, b_seconds)]
    c = paired({i: math.log(b) for i, b in enumerate(b_seconds)},
               {i: math.log(a) for i, a in enumerate(a_seconds)}, level=confidence)
    low, high = math.exp(c.low), math.exp(c.high)
    word = "faster" if low > 1 else "slower" if high < 1 else "not decided"
    return {"ratio": math.exp(c.mean), "low": low, "high": high, "verdict": word,
            "pairs": c.n, "min": math.exp(min(logs)), "max": math.exp(max(logs))}
