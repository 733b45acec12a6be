"""How much of the image a kept set preserves: the demo's fidelity measures.

All attention measures use the ViT's last layer and the patch keys only (the
CLS token is not a visual token an MLLM keeps). Restricting a softmax to the
kept keys and renormalising is exactly the attention over the kept tokens, so
no logits are needed.
"""

from __future__ import annotations

import numpy as np

import tops_core

__all__ = ["attention_output", "output_fidelity", "coverage_fraction", "attention_mass", "measure"]

_PLAIN_COVERAGE = tops_core.Objective(focus=0.0)


def attention_output(
    attention: np.ndarray, values: np.ndarray, queries: np.ndarray, keys: np.ndarray
) -> np.ndarray:
    """Attention output of ``queries`` over ``keys`` only, heads concatenated.

    Parameters
    ----------
    attention : (H, T, T) probabilities (token 0 = CLS).
    values : (H, T, d) values.
    queries, keys : token indices into ``T``.

    Returns
    -------
    numpy.ndarray, shape (len(queries), H * d), float64
    """
    p = attention[:, queries][:, :, keys].astype(np.float64)  # (H, q, k)
    p /= p.sum(axis=-1, keepdims=True)
    out = p @ values[:, keys].astype(np.float64)  # (H, q, d)
    return out.transpose(1, 0, 2).reshape(len(queries), -1)


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(axis=1)
    return num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def output_fidelity(attention: np.ndarray, values: np.ndarray, kept: np.ndarray) -> tuple[float, float]:
    """Cosine between attention outputs over all patches and over the kept ones.

    Returns
    -------
    cls, patches : float
        For the CLS query, and the mean over every patch query (queries that
        played no part in the relevance scores).
    """
    n = attention.shape[-1] - 1
    every = np.arange(1, n + 1)
    keys = kept + 1
    queries = np.concatenate([[0], every])
    full = attention_output(attention, values, queries, every)
    pruned = attention_output(attention, values, queries, keys)
    cos = _cosine_rows(full, pruned)
    return float(cos[0]), float(cos[1:].mean())


def coverage_fraction(sim: np.ndarray, kept: np.ndarray) -> float:
    """``f_cov(S) / f_cov(V)`` with ``f_cov(S) = sum_j max_{i in S} sim[j, i]`` (plain coverage)."""
    every = np.arange(sim.shape[0])
    ones = np.ones(sim.shape[0])
    return _PLAIN_COVERAGE.value_of(ones, sim, kept) / _PLAIN_COVERAGE.value_of(ones, sim, every)


def attention_mass(relevance: np.ndarray, kept: np.ndarray) -> float:
    """Share of the CLS -> patch attention that falls on kept patches."""
    return float(relevance[kept].sum() / relevance.sum())


def measure(attention, values, relevance, sim, kept, seconds, objective_value, upper_bound) -> dict:
    """One table row: every measure of one kept set (a plain dict, so it serialises as JSON).

    ``f_over_ub`` is the kept set's default-objective value over the best proven
    upper bound on that objective's optimum at this budget.
    """
    cls, patches = output_fidelity(attention, values, kept)
    return dict(
        kept=int(kept.size),
        coverage=coverage_fraction(sim, kept),
        cls_fidelity=cls,
        patch_fidelity=patches,
        attention_mass=attention_mass(relevance, kept),
        ms=1e3 * seconds,
        f_over_ub=objective_value / upper_bound if upper_bound > 0 else 1.0,
    )
