"""The paper's TOPS step rule and its sibling rules, for side-by-side comparison.

A rule builds its set by its own step-wise score, not by maximising a fixed
set function. ``select(..., objective=rule)`` runs it, then evaluates and
certifies the answer with a reference :class:`~tops_core.Objective`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tops_core._numba import columns_of, coverage_all, fast_for, rule_kernels
from tops_core._validate import check_choice, check_weight, pow2_scale
from tops_core.normalize import NORMS, normalize
from tops_core.objective import lane_sum
from tops_core.solvers.dpp import dpp_greedy_map

__all__ = ["TOPSRule", "TopK", "DivPrune", "SCOPE", "DPP", "Rule"]

# Candidate rows per block when summing coverage gains: bounds the temporary.
_BLOCK = 256


def _coverage_gains(sim: np.ndarray, m: np.ndarray, rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``c_i = sum_j keep_j * max(0, sim[i, j] - m_j)`` for ``i in rows``, float64.

    ``keep`` is 1.0 for the columns that count and 0.0 for the others. Reduced
    canonically (:func:`~tops_core.objective.lane_sum` over all ``j``), so the
    Numba kernel ``lane_gain(sim[i], m, keep)`` gives the same bits.
    """
    out = np.empty(rows.shape[0], dtype=np.float64)
    for start in range(0, rows.shape[0], _BLOCK):
        block = sim[rows[start : start + _BLOCK]].astype(np.float64)
        block -= m
        np.maximum(block, 0.0, out=block)
        block *= keep
        out[start : start + _BLOCK] = lane_sum(block)
    return out


@dataclass(frozen=True)
class TOPSRule:
    """The paper's selection rule (TOPS, arXiv 2606.27161, Algorithm 1).

    Seeds with ``argmax r``; then, over the candidates ``i`` not in ``S``,
    ``score_i = nrm(r)_i + alpha * nrm(d)_i + lam * nrm(c)_i`` with novelty
    ``d_i = 1 - m_i``, coverage ``c_i = sum_{j not in S} max(0, F[i, j] - m_j)``
    (``j = i`` included) and ``m_j = max_{s in S} F[j, s]``. ``nrm`` is
    recomputed over the candidates at every step, so the rule is not the greedy
    of any fixed set function and carries no approximation guarantee of its
    own. Ties go to the lowest index.

    Parameters
    ----------
    alpha : float, default 0.5
        Weight of semantic diversity ``d``.
    lam : float, default 0.5
        Weight of information coverage ``c``.
    norm : {"mean", "minmax"}, default "mean"
        Per-step normalisation (the algorithm boxes divide by the mean; the
        text says min-max).

    Notes
    -----
    ``alpha = lam = 0`` is top-k by ``r``; ``lam = 0`` with constant ``r`` is
    farthest-point greedy (DivPrune up to the seed); ``alpha = 0`` with
    constant ``r`` is facility-location greedy seeded at token 0. The rule is
    unchanged by ``sim -> (1 + sim) / 2``.
    """

    alpha: float = 0.5
    lam: float = 0.5
    norm: str = "mean"
    name = "tops_rule"
    needs_symmetric = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_weight("alpha", self.alpha))
        object.__setattr__(self, "lam", check_weight("lam", self.lam))
        check_choice("norm", self.norm, NORMS)

    def order(self, scores: np.ndarray, sim: np.ndarray, k: int) -> np.ndarray:
        """Pick order of ``k`` tokens on validated NumPy inputs.

        With Numba installed, coverage is maintained incrementally (``O(N)``
        per changed column) and every step whose leader is not within the
        proven rounding bound of the runner-up is decided there; the other
        steps run :meth:`transcription_step`, so the order is the
        transcription's exactly.
        """
        if fast_for(sim) and k > 2:
            return self._order_incremental(scores, sim, k)
        return self.transcription(scores, sim, k)

    def transcription(self, scores: np.ndarray, sim: np.ndarray, k: int) -> np.ndarray:
        """The rule as the paper writes it, ``O(N^2)`` per step (the reference)."""
        n = scores.shape[0]
        order = np.empty(k, dtype=np.int64)
        if k == 0:
            return order
        r = scores.astype(np.float64)
        chosen = np.zeros(n, dtype=bool)
        seed = int(np.argmax(r))
        order[0] = seed
        chosen[seed] = True
        m = sim[:, seed].astype(np.float64)
        for t in range(1, k):
            pick, _ = self.transcription_step(r, sim, m, chosen)
            order[t] = pick
            chosen[pick] = True
            np.maximum(m, sim[:, pick], out=m)
        return order

    def transcription_step(self, r, sim, m, chosen, coverage_of=None):
        """One step of the transcription: ``(pick, (candidates, coverage))``.

        ``coverage_of(keep)``, if given, computes the same coverage over all
        tokens bit for bit (the Numba kernel); the default is the NumPy one.
        """
        cand = np.flatnonzero(~chosen)
        score = normalize(r[cand], self.norm)
        if self.alpha:
            score = score + self.alpha * normalize(1.0 - m[cand], self.norm)
        coverage = None
        if self.lam:
            keep = (~chosen).astype(np.float64)
            coverage = _coverage_gains(sim, m, cand, keep) if coverage_of is None else coverage_of(keep)[cand]
            score = score + self.lam * normalize(coverage, self.norm)
        return int(cand[np.argmax(score)]), (cand, coverage)

    def _order_incremental(self, scores, sim, k):
        n = scores.shape[0]
        r = scores.astype(np.float64)
        rows = np.ascontiguousarray(sim)
        cols = columns_of(rows)
        order = np.empty(k, dtype=np.int64)
        chosen = np.zeros(n, dtype=bool)
        seed = int(np.argmax(r))
        order[0] = seed
        chosen[seed] = True
        m = sim[:, seed].astype(np.float64)

        # c_i sums F[i, j] over j: the rows of F's transpose, streamed.
        def coverage_of(keep):
            return coverage_all(cols, keep, m)

        c = coverage_of((~chosen).astype(np.float64))
        c_max = float(c.max())
        step, updates, forced = 1, 0, -1
        while True:
            step, updates = rule_kernels().tops_rule_steps(
                rows,
                cols,
                r,
                self.alpha,
                self.lam,
                self.norm == "minmax",
                k,
                order,
                step,
                m,
                chosen,
                c,
                c_max,
                updates,
                forced,
            )
            if step >= k:
                return order
            forced, (cand, coverage) = self.transcription_step(r, sim, m, chosen, coverage_of)
            if coverage is not None:  # exact coverage: the drift bound restarts from zero
                c[cand] = coverage
                updates = 0


@dataclass(frozen=True)
class TopK:
    """Top-k by relevance (FastV, FasterVLM). Ties go to the lowest index."""

    name = "topk"
    needs_symmetric = False

    def order(self, scores: np.ndarray, sim: np.ndarray, k: int) -> np.ndarray:
        """Pick order (descending relevance) on validated NumPy inputs."""
        return np.argsort(-scores.astype(np.float64), kind="stable")[:k].astype(np.int64)


@dataclass(frozen=True)
class DivPrune:
    """Farthest-point greedy on cosine distance ``1 - s`` (DivPrune, CVPR 2025).

    Each step adds the candidate farthest from the kept set (largest
    ``min_{s in S} (1 - F[i, s])``); ties go to the lowest index. Relevance is
    not used except by ``seed="relevance"``.

    Parameters
    ----------
    seed : {"isolated", "relevance"}, default "isolated"
        First token: DivPrune's (the token whose nearest neighbour is
        farthest) or ``argmax r`` (TOPS's seed, making ``TOPSRule(lam=0)``
        with constant ``r`` identical).
    """

    seed: str = "isolated"
    name = "divprune"
    needs_symmetric = True

    def __post_init__(self) -> None:
        check_choice("seed", self.seed, ("isolated", "relevance"))

    def order(self, scores: np.ndarray, sim: np.ndarray, k: int) -> np.ndarray:
        """Pick order on validated NumPy inputs."""
        n = scores.shape[0]
        order = np.empty(k, dtype=np.int64)
        if k == 0:
            return order
        if self.seed == "relevance":
            first = int(np.argmax(scores))
        else:
            dist = 1.0 - sim.astype(np.float64)
            np.fill_diagonal(dist, np.inf)
            first = int(np.argmax(dist.min(axis=1)))
        chosen = np.zeros(n, dtype=bool)
        order[0] = first
        chosen[first] = True
        m = sim[:, first].astype(np.float64)
        for t in range(1, k):
            pick = int(np.argmin(np.where(chosen, np.inf, m)))
            order[t] = pick
            chosen[pick] = True
            np.maximum(m, sim[:, pick], out=m)
        return order


@dataclass(frozen=True)
class SCOPE:
    """SCOPE's rule: facility-location gain times saliency to a power.

    Each step adds ``argmax_i c_i * r_i**power`` over the candidates, with
    ``c_i = sum_j max(0, F[i, j] - m_j)`` over all tokens and ``m`` the running
    max (zero for the empty set). ``power = 0`` is plain facility-location
    greedy. Needs ``r >= 0``.

    Parameters
    ----------
    power : float, default 1.0
        Saliency exponent.
    """

    power: float = 1.0
    name = "scope"
    needs_symmetric = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "power", check_weight("power", self.power))

    def order(self, scores: np.ndarray, sim: np.ndarray, k: int) -> np.ndarray:
        """Pick order on validated NumPy inputs."""
        n = scores.shape[0]
        r = scores.astype(np.float64)
        r = np.maximum(r, 0.0)
        top = float(r.max(initial=0.0))
        if top > 0 and self.power * abs(math.log2(top)) > 1000:
            # r ** power would overflow (or vanish): a common power-of-two factor changes
            # no comparison between candidates.
            r = pow2_scale(r)
        saliency = np.ones(n) if self.power == 0 else np.power(r, self.power)
        every = np.ones(n)
        chosen = np.zeros(n, dtype=bool)
        m = np.zeros(n, dtype=np.float64)
        order = np.empty(k, dtype=np.int64)
        for t in range(k):
            cand = np.flatnonzero(~chosen)
            score = _coverage_gains(sim, m, cand, every) * saliency[cand]
            pick = int(cand[np.argmax(score)])
            order[t] = pick
            chosen[pick] = True
            np.maximum(m, sim[:, pick], out=m)
        return order


@dataclass(frozen=True)
class DPP:
    """CDPruner's rule: greedy MAP of the DPP with kernel ``diag(q) S diag(q)``.

    Parameters
    ----------
    quality : {"minmax", "raw"}, default "minmax"
        ``q``: relevance min-max normalised per image (CDPruner) or as given.
    """

    quality: str = "minmax"
    name = "dpp"
    needs_symmetric = True

    def __post_init__(self) -> None:
        check_choice("quality", self.quality, ("minmax", "raw"))

    def order(self, scores: np.ndarray, sim: np.ndarray, k: int) -> np.ndarray:
        """Pick order on validated NumPy inputs."""
        q = normalize(scores, "minmax") if self.quality == "minmax" else scores.astype(np.float64)
        return dpp_greedy_map(q, sim, k)


Rule = TOPSRule | TopK | DivPrune | SCOPE | DPP
