"""Which differences between runs are beyond noise: the statistics behind the report's verdicts.

A *unit* is one run or a seed group (runs equal up to `seed`). Its number for one metric is an
`Estimate`: a seed group's mean, whose noise is the spread across its seeds (which holds each
run's sampling noise and the training seed's luck, the larger of the two for GANs; Lucic et al.
2018), or one run's value, whose own spread is sampling noise only. A verdict must count the
seed's luck wherever it can:

- group vs group: Welch's t-test on the two means (`scipy.stats.ttest_ind_from_stats`,
  equal_var=False), degrees of freedom from the seeds.
- group vs one run: the run's seed spread is unknown, not zero. The group's seed spread is lent
  to it (the run is one more draw of the same variability): a pooled t-test with the group's
  n - 1 degrees of freedom, i.e. `ttest_ind_from_stats(..., nobs2=1, equal_var=True)`.
- run vs run: the seed spread pooled over the dataset's seed groups is borrowed (say which), with
  their degrees of freedom; with no seed group on the dataset the verdict is "unknown", and
  the test against sampling noise alone is shown beside it, never as a "yes".

Every table of verdicts is one family: Holm's step-down controls the chance of any false "yes"
in it at 5% (`holm`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05
# Spreads from many resamples (KID's U-statistic, the probe's 1,000 test-set resamples) are
# judged as known (a normal quantile); FID's bootstrap std from `evaluate.fid_bootstrap` draws
# is judged with that many draws' t.
MANY = 10 ** 9


@dataclass
class Estimate:
    """One metric of one unit: its value and the standard error of that value."""
    value: float
    se: float | None
    kind: str  # "seeds" (a group's mean over seeds) or "sampling" (one run)
    n: int = 1  # seeds behind the value
    draws: int = MANY  # what the sampling spread was estimated from (kind "sampling")
    sd: float | None = None  # the std across seeds (kind "seeds")


def seed_estimate(values: list[float]) -> Estimate:
    """Mean over seeds with its standard error, std across seeds / sqrt(n)."""
    sd = statistics.stdev(values)
    return Estimate(statistics.mean(values), sd / math.sqrt(len(values)), "seeds", len(values), sd=sd)


@dataclass
class SeedSpread:
    """The std across seeds pooled over seed groups, with its degrees of freedom and sources."""
    sd: float
    df: int
    groups: list[str]


def pooled_spread(groups: dict[str, Estimate]) -> SeedSpread | None:
    """sum (n_g - 1) sd_g^2 / sum (n_g - 1) over the groups (kind "seeds"); None without any."""
    seeds = {name: e for name, e in groups.items() if e.kind == "seeds"}
    df = sum(e.n - 1 for e in seeds.values())
    if not df:
        return None
    variance = sum((e.n - 1) * e.sd ** 2 for e in seeds.values()) / df
    return SeedSpread(math.sqrt(variance), df, list(seeds))


@dataclass
class Test:
    diff: float  # a - b
    noise: float | None  # standard deviation of the difference under the test's noise model
    p: float | None  # two-sided; None: the seed spread is unknown
    basis: str  # what the noise is (for the table)


def _sampling_welch(a: Estimate, b: Estimate) -> float | None:
    """p of a - b against sampling noise alone: Welch's t with each side's spread as a standard
    error estimated from its draws (ttest_ind_from_stats wants std and n with se = std / sqrt(n))."""
    if a.se is None or b.se is None:
        return None
    return float(stats.ttest_ind_from_stats(a.value, a.se * math.sqrt(a.draws), a.draws, b.value,
                                            b.se * math.sqrt(b.draws), b.draws, equal_var=False).pvalue)


def compare(a: Estimate, b: Estimate, names: tuple[str, str], pool: SeedSpread | None = None) -> Test:
    """Is a - b beyond noise? The noise model follows the module's docstring; `pool` is the
    dataset's pooled seed spread, used only between two single runs."""
    diff = a.value - b.value
    spreads = [e.sd for e in (a, b) if e.kind == "seeds"] + ([pool.sd] if pool and "seeds" not in (a.kind, b.kind) else [])
    if spreads and not any(spreads):  # identical values over every seed: no spread to judge by
        return Test(diff, None, None, "seed spread is 0 (identical values over the seeds)")
    if a.kind == "seeds" and b.kind == "seeds":
        p = stats.ttest_ind_from_stats(a.value, a.sd, a.n, b.value, b.sd, b.n, equal_var=False).pvalue
        return Test(diff, math.hypot(a.se, b.se), float(p), "seeds, Welch t")
    if "seeds" in (a.kind, b.kind):
        (group, group_name), (single, single_name) = ((a, names[0]), (b, names[1])) if a.kind == "seeds" else \
            ((b, names[1]), (a, names[0]))
        # The single run as a sample of one with the group's variance: pooled variance = the
        # group's, df = n - 1 (the single run adds no information about the spread).
        p = stats.ttest_ind_from_stats(group.value, group.sd, group.n, single.value, group.sd, 1,
                                       equal_var=True).pvalue
        return Test(diff, group.sd * math.sqrt(1 / group.n + 1), float(p),
                    f"seed sd of {group_name} lent to {single_name}, t with {group.n - 1} df")
    if pool is not None:
        noise = pool.sd * math.sqrt(2)
        p = 2 * stats.t.sf(abs(diff) / noise, pool.df)
        return Test(diff, noise, float(p), f"seed sd borrowed from {', '.join(pool.groups)}, t with {pool.df} df")
    sampling = _sampling_welch(a, b)
    alone = "" if sampling is None else f"; against sampling noise alone p = {sampling:.2g}"
    noise = math.hypot(a.se, b.se) if a.se is not None and b.se is not None else None
    return Test(diff, noise, None, f"seed spread unknown (one run each){alone}")


def one_sample(estimate: Estimate) -> float | None:
    """Two-sided p of estimate.value != 0: a t-test over seeds (n - 1 df) or, for one run, its
    sampling standard error from `draws` resamples."""
    if estimate.se is None or estimate.se == 0:
        return None
    df = estimate.n - 1 if estimate.kind == "seeds" else estimate.draws - 1
    return float(2 * stats.t.sf(abs(estimate.value) / estimate.se, df))


def holm(pvalues: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down: which hypotheses to reject with family-wise error <= alpha.

    Hand-written because it is five lines and statsmodels (multipletests) is not a dependency."""
    order = sorted(range(len(pvalues)), key=pvalues.__getitem__)
    reject = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        reject[i] = True
    return reject
