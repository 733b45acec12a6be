"""The paper's TOPS rule and the sibling rules: transcription, equivalences, certificates."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tops_core
from tops_core import DPP, SCOPE, DivPrune, Objective, TopK, TOPSRule
from tops_core.testing import problems

NORM = st.sampled_from(["mean", "minmax"])


def _with_unit_diagonal(sim):
    sim = sim.copy()
    np.fill_diagonal(sim, 1.0)
    return sim


def _tops_by_hand(r, sim, k, alpha, lam, norm):
    """Algorithm 1 written out with Python loops, as an independent transcription."""
    n = len(r)

    def nrm(values):
        values = np.asarray(values, dtype=float)
        if norm == "mean":
            mean = values.mean()
            return np.zeros_like(values) if mean == 0 else values / mean
        span = values.max() - values.min()
        return np.zeros_like(values) if span == 0 else (values - values.min()) / span

    chosen = [int(np.argmax(r))]
    while len(chosen) < k:
        cand = [i for i in range(n) if i not in chosen]
        m = [max(sim[j][s] for s in chosen) for j in range(n)]
        d = [1 - m[i] for i in cand]
        c = [sum(max(0.0, sim[i][j] - m[j]) for j in cand) for i in cand]
        score = nrm([r[i] for i in cand]) + alpha * nrm(d) + lam * nrm(c)
        chosen.append(cand[int(np.argmax(score))])
    return chosen[:k]


@settings(max_examples=200)
@given(problems(max_n=9), st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from([0.0, 0.5, 1.0]), NORM)
def test_tops_rule_matches_algorithm_1(problem, alpha, lam, norm):
    scores, sim, k = problem
    sel = tops_core.select(scores, sim, k, objective=TOPSRule(alpha, lam, norm))
    assert sel.order.tolist() == _tops_by_hand(scores, sim, k, alpha, lam, norm)
    assert sel.method == "tops_rule"


@settings(max_examples=200)
@given(problems(max_n=10), NORM)
def test_tops_rule_without_diversity_or_coverage_is_topk(problem, norm):
    scores, sim, k = problem
    rule = tops_core.select(scores, sim, k, objective=TOPSRule(alpha=0, lam=0, norm=norm))
    topk = tops_core.select(scores, sim, k, objective=TopK())
    assert np.array_equal(rule.order, topk.order)


@settings(max_examples=200)
@given(problems(max_n=10), NORM)
def test_tops_rule_without_coverage_and_flat_relevance_is_divprune(problem, norm):
    _, sim, k = problem
    flat = np.ones(sim.shape[0])
    rule = tops_core.select(flat, sim, k, objective=TOPSRule(alpha=0.5, lam=0, norm=norm))
    div = tops_core.select(flat, sim, k, objective=DivPrune(seed="relevance"))
    assert np.array_equal(rule.order, div.order)


@settings(max_examples=200)
@given(problems(max_n=10), NORM)
def test_tops_rule_without_diversity_and_flat_relevance_is_facility_location(problem, norm):
    """Facility-location greedy continued from TOPS's seed (token 0 for flat r)."""
    _, sim, k = problem
    sim = _with_unit_diagonal(sim)
    flat = np.ones(sim.shape[0])
    rule = tops_core.select(flat, sim, k, objective=TOPSRule(alpha=0, lam=1.0, norm=norm))
    plain = Objective(focus=0.0)
    order = [0] if k else []
    while len(order) < k:
        gains = plain.gains(flat, sim, order)
        gains[order] = -np.inf
        order.append(int(np.argmax(gains)))
    assert rule.order.tolist() == order


@settings(max_examples=150)
@given(problems(max_n=10))
def test_scope_power_zero_is_facility_location_greedy(problem):
    scores, sim, k = problem
    scope = tops_core.select(scores, sim, k, objective=SCOPE(power=0))
    greedy = tops_core.select(scores, sim, k, objective=Objective(focus=0.0), method="greedy")
    assert np.array_equal(scope.order, greedy.order)


def test_scope_weights_gain_by_saliency():
    sim = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.9], [0.0, 0.9, 1.0]])
    scores = np.array([0.1, 0.2, 0.3])
    # Gains 1, 1.9, 1.9 times saliency .1, .2, .3: token 2 first, then token 0 (1*.1 > .1*.2).
    assert tops_core.select(scores, sim, 2, objective=SCOPE()).order.tolist() == [2, 0]


def test_divprune_isolated_seed_is_the_most_isolated_token():
    rng = np.random.default_rng(0)
    sim = tops_core.cosine(rng.normal(size=(40, 5)))
    dist = 1 - sim
    np.fill_diagonal(dist, np.inf)
    sel = tops_core.select(np.zeros(40), sim, 10, objective=DivPrune())
    assert sel.order[0] == int(np.argmax(dist.min(axis=1)))
    m = sim[:, sel.order[:5]].max(axis=1)
    m[sel.order[:5]] = np.inf
    assert sel.order[5] == int(np.argmin(m))


def _logdet_greedy(q, sim, k):
    kernel = q[:, None] * sim * q[None, :]
    order = []
    for _ in range(k):
        best, best_val = None, -np.inf
        for i in range(len(q)):
            if i in order:
                continue
            idx = [*order, i]
            sign, logdet = np.linalg.slogdet(kernel[np.ix_(idx, idx)])
            val = logdet if sign > 0 else -np.inf
            if val > best_val + 1e-12:
                best, best_val = i, val
        order.append(best)
    return order


@settings(max_examples=60)
@given(st.integers(0, 2**31 - 1), st.integers(2, 14), st.sampled_from(["minmax", "raw"]))
def test_dpp_rule_is_greedy_log_det(seed, n, quality):
    rng = np.random.default_rng(seed)
    sim = tops_core.cosine(rng.normal(size=(n, 24)))
    scores = 0.1 + rng.random(n)
    k = int(rng.integers(1, n + 1))
    sel = tops_core.select(scores, sim, k, objective=DPP(quality=quality))
    q = tops_core.normalize(scores, "minmax") if quality == "minmax" else scores
    if quality == "minmax":  # the min-relevance token has q = 0: greedy log det cannot rank it
        k = min(k, n - 1)
    assert sel.order[:k].tolist() == _logdet_greedy(q, sim, k)


def test_dpp_returns_k_tokens_past_the_kernel_rank():
    feats = np.repeat(np.eye(2), 3, axis=0)  # rank-2 kernel, 6 tokens
    sel = tops_core.select(np.ones(6), tops_core.cosine(feats), 5, objective=DPP(quality="raw"))
    assert sorted(sel.order[:2] // 3) == [0, 1] and np.unique(sel.indices).size == 5


@settings(max_examples=100)
@given(problems(max_n=8), st.sampled_from([TOPSRule(), TopK(), DivPrune(), SCOPE(), DPP()]))
def test_rules_are_certified_by_the_reference_objective(problem, rule):
    scores, sim, k = problem
    ref = Objective(focus=0.25)
    sel = tops_core.select(scores, sim, k, objective=rule, reference=ref)
    assert sel.value == pytest.approx(ref.value(scores, sim, sel.indices), abs=1e-9)
    from tops_core.testing import brute_force

    best, _ = brute_force(ref, scores, sim, k)
    assert sel.value <= best + 1e-9 <= sel.upper_bound + 2e-9
    assert np.array_equal(sel.indices, np.sort(sel.order))


def test_tops_and_divprune_are_invariant_to_the_shifted_cosine():
    """SCOPE is not: its first gains start from m = 0, where the shift matters."""
    rng = np.random.default_rng(4)
    cos = tops_core.cosine(rng.normal(size=(50, 6)), shift=False)
    r = rng.random(50)
    for rule in (TOPSRule(), TOPSRule(norm="minmax"), DivPrune()):
        a = rule.order(r, cos, 12)
        b = rule.order(r, (1 + cos) / 2, 12)
        assert np.array_equal(a, b), rule


@pytest.mark.parametrize("rule", [TOPSRule(), TopK(), DivPrune(), SCOPE(), DPP()])
@pytest.mark.parametrize("method", ["exact", "lazy", "stochastic"])
def test_rules_refuse_other_solvers_and_say_why(rule, method):
    with pytest.raises(ValueError, match="only method='greedy'"):
        tops_core.select(np.ones(3), np.eye(3), 2, objective=rule, method=method)


def test_tops_rule_explains_why_it_has_no_exact_solver():
    with pytest.raises(ValueError, match="not the greedy of any fixed set function"):
        tops_core.select(np.ones(3), np.eye(3), 2, objective=TOPSRule(), method="exact")


def test_rule_parameters_are_validated():
    with pytest.raises(ValueError, match="norm must be one of"):
        TOPSRule(norm="max")
    with pytest.raises(ValueError, match="alpha"):
        TOPSRule(alpha=-1)
    with pytest.raises(ValueError, match="seed must be one of"):
        DivPrune(seed="random")
    with pytest.raises(ValueError, match="quality must be one of"):
        DPP(quality="softmax")


def test_normalize():
    assert tops_core.normalize([0.0, 0.0]).tolist() == [0.0, 0.0]
    assert tops_core.normalize([2.0, 2.0], how="minmax").tolist() == [0.0, 0.0]
    assert tops_core.normalize([[1.0, 3.0]], how="mean").tolist() == [[0.5, 1.5]]
    with pytest.raises(ValueError, match="Did you mean 'minmax'"):
        tops_core.normalize([1.0], how="min_max")
