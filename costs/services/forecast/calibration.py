"""Calibration of the simulated spread on the scope's own backtests.

Daily bounds: split-conformal quantiles of the standardized daily log errors.

Totals: an origin's total over ``d`` days misses by a log ratio ``r = log(actual /
forecast)``, the forecast being the median of the simulated path totals. The simulated
paths give its spread ``s(d)`` (sd of the log of the simulated totals), but two things
are off in every backtest we ran: the simulated days are too wide or too narrow for the
series (a scale ``kappa``), and a level or trend that is off does not average out over
the days (a relative level error ``tau``). So the shape of the error over lengths is
``sd(d) = sqrt(kappa^2 s(d)^2 + tau^2)``, both fitted by maximum likelihood on every
(origin, 7/14/21... days) total of the backtests: the lengths share the two parameters
instead of each getting a noisy quantile of its own. The likelihood is that of a random
effect: an origin's level error is one draw, shared by all of its totals (its 7-day and
its 90-day total miss by the same level), and each total adds its own ``kappa s(d)``.
Read as independent rows instead, 13 totals of one origin count as 13 draws of the
level error, and on real data the fit often fell into the other explanation, no level
error and a large ``kappa``: an origin whose simulated spread was wide happened to miss
widely. Its 90-day intervals then shrank with a calm year's simulated spread and held
18-41% of Peyton Manning's 90-day totals, against 88-91% for the other fits
(docs/benchmarks.md, "The level error of an origin, session 6").

How wide the interval is in units of ``sd(d)`` is then set by split-conformal
prediction over the origins (normalized conformal scores): each calibration origin is
one replicate of the whole forecast, scored by its standardized miss ``|r| / sd(d)`` on
its longest total, the horizon's own length or, for an origin nearer than the horizon,
all of its holdout (the error model only translates that length to the horizon's). The
interval's half-width is the split-conformal ``level`` quantile of those scores times
``sd`` of the horizon: the score at position ``(n + 1) level`` in sorted order,
interpolated between the two ranks around it (see ``conformal``). The textbook rank
``ceil((n + 1) level)`` covers ``ceil((n + 1) level) / (n + 1)`` of exchangeable misses
on average, exactly the level only when ``(n + 1) level`` is whole: with 8 scored
origins the 80% rank is the largest score, 8/9 = 88.9% on average. Gaps in a history
leave an origin or two without a total (with 9 origins, a quarter to half of Peyton
Manning's fits scored 7 or 8); interpolated, the position means the level for every n
(docs/benchmarks.md, "The conformal rank between two scores, session 7"). Scoring every
origin on its shortest totals too (an average over its lengths) lets 7-day misses set a
90-day width: long totals miss in ways short ones do not show (regime changes, a trend
that bends), and such widths covered 70-75% of 90-day totals (docs/benchmarks.md,
session 4). Real
spend is not normal in log space (Peyton Manning's misses have fat tails): the scores
carry tails a normal or t quantile misses, and the rank needs no distributional
assumption. Only a level beyond what the origins can show (over n / (n + 1): 0.95 with
12 origins) needs a tail shape, and there a fat one (Student's t with 2 degrees of
freedom) extrapolates from the largest score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

KAPPA_GRID = np.geomspace(0.25, 4.0, 41)
TAU_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 61)])


@dataclass
class Calibration:
    """Backtest scores of the simulated spread against what really happened.

    ``daily``: (step, z, origin) with z = (log(actual + c) - log(forecast + c)) /
    simulated log sd.
    ``total``: (origin, days, log ratio of actual to forecast total, simulated log sd of
    that total, one-off day, log ratio without it) for the cumulative totals of the first
    7, 14, ... days of each origin. The one-off day is the day (its position in the
    history) that made more than half of the total's miss, or -1; the last column is the
    miss with that day at its forecast (the miss itself when there is none).
    ``leads``: each origin's days before the last complete day."""

    origins: int = 0
    daily: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    total: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    leads: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per origin 1, 2, ...

    def only(self, leads) -> Calibration:
        """The scores of the origins at these leads only (as if only those had run)."""
        keep = np.flatnonzero(np.isin(self.leads, list(leads))) + 1
        number = np.zeros(self.origins + 1)
        number[keep] = np.arange(1, len(keep) + 1)  # the kept origins numbered 1, 2, ...
        daily = self.daily[np.isin(self.daily[:, 2], keep)].copy()
        total = self.total[np.isin(self.total[:, 0], keep)].copy()
        daily[:, 2], total[:, 0] = number[daily[:, 2].astype(int)], number[total[:, 0].astype(int)]
        return Calibration(len(keep), daily, total, self.leads[keep - 1])


@dataclass(frozen=True)
class TotalSpread:
    """The fitted spread of a total's log error: ``kappa`` scales the simulated log sd,
    ``tau`` is the relative level error, ``scores`` the origins' standardized misses."""

    kappa: float
    tau: float
    scores: np.ndarray
    weights: np.ndarray | None = None  # per score; None: 1 each (see fit_total_spread)
    # The scores for the side of the interval below the forecast, where they differ: a
    # miss made by one day above its forecast says nothing of how low a total goes (and
    # one below, of how high: ``high_scores``). None: ``scores``.
    low_scores: np.ndarray | None = None
    high_scores: np.ndarray | None = None

    def sd(self, simulated_log_sd):
        return np.sqrt((self.kappa * simulated_log_sd) ** 2 + self.tau**2)

    @property
    def count(self) -> float:
        """How many origins the scores stand for (their weights' sum)."""
        return float(len(self.scores) if self.weights is None else np.sum(self.weights))

    @property
    def shown(self) -> float:
        """The highest level the origins' scores have a position for: n / (n + 1)."""
        return self.count / (self.count + 1)

    def shows(self, level: float) -> bool:
        """Whether the origins' scores have a position for ``level`` (it is <= ``shown``)."""
        return (self.count + 1) * level <= self.count + 1e-9

    def log_half_width(self, simulated_log_sd: float, level: float, side: str = "high") -> float:
        """Half the width, in log space, of the ``level`` interval of a total, on its
        ``side`` ("low" or "high") of the forecast. ``n`` origins show levels up to n /
        (n + 1); beyond that the largest score is scaled as the tail of a Student t with
        2 degrees of freedom grows (a rank past the largest score is no quantile). Real
        spend is fat-tailed: scaled as a normal tail, Peyton Manning's 95% intervals held
        86-88% of its totals (tuning data; docs/benchmarks.md, "Levels beyond what the
        origins show, session 5")."""
        scores = {"low": self.low_scores, "high": self.high_scores}[side]
        scores = self.scores if scores is None else scores
        if self.shows(level):
            width = conformal(scores, level, self.weights)
        else:
            width = float(np.max(scores)) * self.tail_growth(level)
        return width * float(self.sd(simulated_log_sd))

    def tail_growth(self, level: float) -> float:
        """How much wider than the largest score a ``level`` past what the scores show
        is: the ratio of the Student t(2) quantiles of ``level`` and of ``shown``."""
        return t2_quantile(0.5 + level / 2) / t2_quantile(0.5 + self.shown / 2)


def fit_total_spread(rows: np.ndarray) -> TotalSpread:
    """Maximum likelihood (on a grid) of ``kappa`` and ``tau`` from ``Calibration.total``
    rows, and each origin's score; see the module docstring.

    One event is scored once: origins whose longest totals were each missed mostly
    because of the same one day (a $20,000 purchase in $100 days sits in the holdout of
    every near origin, as the holdouts overlap) count that miss once between them, each
    with weight 1/k, and each keeps its miss without that day with weight 1 - 1/k. Counted
    k times, one day in 400 was read as the miss of a third of all 30-day totals, and the
    80% interval held another such day (376-28,976 around 3,416); scored once it is
    3,348-3,475, and the 95% interval, beyond what 12 origins show, still holds it
    (docs/benchmarks.md, "One-off days, session 10")."""
    ratio, sim_sd = rows[:, 2], rows[:, 3]
    loglik = _level_effect_loglik(rows[:, 0], ratio, sim_sd)
    k, t = np.unravel_index(int(np.argmax(loglik)), loglik.shape)
    spread = TotalSpread(float(KAPPA_GRID[k]), float(TAU_GRID[t]), np.zeros(0))
    sd = np.maximum(spread.sd(sim_sd), 1e-9)
    standardized = np.abs(ratio) / sd
    # Each origin's score is its miss on its longest total (rows are in order of length
    # within an origin, but sorting keeps that from being an assumption).
    order = np.lexsort((rows[:, 1], rows[:, 0]))
    origins = rows[order, 0]
    last = np.flatnonzero(np.append(origins[1:] != origins[:-1], True))
    scores = standardized[order][last]
    if rows.shape[1] < 6:  # rows without one-off days
        return TotalSpread(spread.kappa, spread.tau, scores)
    one_off, without = rows[order, 4][last], (np.abs(rows[:, 5]) / sd)[order][last]
    weights, extra_scores, extra_weights = np.ones(len(last)), [], []
    for day in np.unique(one_off[one_off >= 0]):
        shared = np.flatnonzero(one_off == day)
        if len(shared) > 1:
            weights[shared] = 1.0 / len(shared)
            extra_scores.extend(without[shared])
            extra_weights.extend([1.0 - 1.0 / len(shared)] * len(shared))
    if not (one_off >= 0).any():
        return TotalSpread(spread.kappa, spread.tau, scores)
    # One side of the interval does not take a one-off day's miss: a day above its
    # forecast there scores its miss without that day for the low side, and one below
    # for the high side (the miss's sign is the day's: it made most of the miss).
    miss = ratio[order][last]
    up, down = (one_off >= 0) & (miss > 0), (one_off >= 0) & (miss < 0)
    low, high = np.where(up, without, scores), np.where(down, without, scores)
    return TotalSpread(
        spread.kappa, spread.tau, np.concatenate([scores, extra_scores]),
        np.concatenate([weights, extra_weights]) if extra_scores else None,
        np.concatenate([low, extra_scores]), np.concatenate([high, extra_scores]),
    )


def _level_effect_loglik(origin: np.ndarray, ratio: np.ndarray, sim_sd: np.ndarray):
    """Log likelihood on the (``KAPPA_GRID``, ``TAU_GRID``) grid of log errors ``ratio``
    that share one level error ~ N(0, tau^2) per origin, plus independent N(0, (kappa
    s)^2) per total. An origin's m totals are jointly normal with covariance D + tau^2
    11' (D = diag((kappa s)^2)); with a = sum 1/D, b = sum r/D, c = sum r^2/D
    (Sherman-Morrison): log det = sum log D + log(1 + tau^2 a), and the quadratic form
    is c - tau^2 b^2 / (1 + tau^2 a)."""
    _, group = np.unique(origin, return_inverse=True)
    member = np.zeros((len(ratio), int(group.max()) + 1))
    member[np.arange(len(ratio)), group] = 1.0  # (rows, origins)
    noise = np.maximum((KAPPA_GRID[:, None] * sim_sd[None, :]) ** 2, 1e-12)  # (K, rows)
    a, b, c = (1 / noise) @ member, (ratio / noise) @ member, (ratio**2 / noise) @ member
    log_det_noise = np.log(noise) @ member  # (K, origins)
    t2 = (TAU_GRID**2)[None, :, None]  # (1, T, 1)
    a, b, c, log_det_noise = (x[:, None, :] for x in (a, b, c, log_det_noise))
    per_origin = log_det_noise + np.log1p(t2 * a) + c - t2 * b**2 / (1 + t2 * a)
    return -0.5 * per_origin.sum(axis=2)


def conformal(scores: np.ndarray, q: float, weights: np.ndarray | None = None) -> float:
    """The split-conformal ``q`` quantile: the score at position (n + 1) q in sorted
    order (1 = the smallest; the smallest or the largest score beyond them), between
    two ranks interpolated geometrically when both scores are positive, linearly
    otherwise. Scores thin out like a tail towards the largest: drawn from normal, t and
    exponential misses, the 80% quantile of 5-8 scores covered 80-82% of new misses
    interpolated geometrically, 81-83% linearly, 83-89% at the rank ceil((n + 1) q)
    (docs/benchmarks.md, "The conformal rank between two scores, session 7"). With
    ``weights``, ranks are cumulative weights (n their sum, the new forecast's own
    weight 1); weights of 1 give the unweighted quantile."""
    scores = np.asarray(scores, dtype=float)
    weights = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=float)
    order = np.argsort(scores, kind="stable")
    ordered, ranks = scores[order], np.cumsum(weights[order])  # rank i at ranks[i]
    i, share = conformal_position(ranks, q)
    if share == 0:
        return float(ordered[i])
    return float(conformal_between(ordered[i - 1], ordered[i], share))


def conformal_position(ranks: np.ndarray, q: float) -> tuple[int, float]:
    """Where ``conformal``'s ``q`` quantile lies among sorted scores of cumulative
    ``ranks``: the index i of the score at or above it, and the share of the way to it
    from score i - 1 (0: score i itself). It depends on the ranks only, so scores that
    share them (simulated rows of n unweighted scores) share it."""
    position = min(max((ranks[-1] + 1) * q, ranks[0]), ranks[-1])
    i = min(int(np.searchsorted(ranks, position - 1e-9)), len(ranks) - 1)
    if i == 0 or ranks[i] <= position:
        return i, 0.0
    return i, float((position - ranks[i - 1]) / (ranks[i] - ranks[i - 1]))


def conformal_between(low, high, share: float):
    """The point ``share`` of the way from score ``low`` to score ``high`` (numbers or
    arrays): geometric when ``low`` is positive, linear otherwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        geometric = low * (high / low) ** share
    return np.where(low > 0, geometric, low + share * (high - low))


def t2_quantile(p: float) -> float:
    """Quantile of Student's t with 2 degrees of freedom (closed form)."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1e-8)."""
    a = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690,
         -30.66479806614716, 2.506628274631000)
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
         -13.28068155288572)
    c = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
         4.374664141464968, 2.938163982698783)
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
        ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
