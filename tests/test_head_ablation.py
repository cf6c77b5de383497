"""Beyond the paper, issue 19 (§1): whole-head masking (ropedim.head_ablation). Each form
changes only the chosen heads and restores the model: zero output equals the model with
that head's o_proj input columns zeroed; uniform attention makes the head's output the
running mean of its values over the causal keys (every other head unchanged); the hooks
and the routing are gone after exit, also on error. The B-heads checks fail on a planted
run where the retrieval score marks random heads (the heads that matter are others) and
pass where the top-scored heads are the ones that cost."""

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from claims.table import check_by_key
from doubles import planted_correctness
from ropedim import models
from ropedim.anatomy import attention_configs, attention_modules
from ropedim.head_ablation import (any_layer_draws, head_intervention, possible_sets, same_layer_draws, top_heads,
                                   uniform_heads, zero_heads)
from ropedim.hooks import capture
from ropedim.measures import MEASURES
from ropedim.qa.config import QAConfig
from ropedim.verdict import SUPPORTED, judge

pytestmark = pytest.mark.usefixtures("one_thread")

HEADS = [(0, 1), (1, 0)]


@pytest.fixture(scope="module")
def tiny():
    return models.load_cached("tiny-llama")


def _ids(n=12):
    return torch.arange(3, 3 + n)[None]


def _logits(model):
    with torch.no_grad():
        return model(input_ids=_ids()).logits.float()


def _clean(model):
    """No ropedim hook left on any attention module and the model's own kernels back."""
    return (all(not a.__dict__.get(w) for a in attention_modules(model) for w in ("_ropedim_pre", "_ropedim_post"))
            and not any(c._attn_implementation.startswith("ropedim_") for c in attention_configs(model))
            and getattr(model, "_ropedim_depth", 0) == 0)


def test_zero_output_equals_the_head_columns_of_o_proj_zeroed(tiny):
    model, dh = tiny.model, tiny.anatomy.head_dim
    base = _logits(model)
    with zero_heads(model, HEADS):
        got = _logits(model)
    assert _clean(model)
    saved = {}
    try:
        for l, h in HEADS:
            w = attention_modules(model)[l].o_proj.weight
            saved.setdefault(l, w.detach().clone())
            with torch.no_grad():
                w[:, h * dh:(h + 1) * dh] = 0
        ref = _logits(model)
    finally:
        with torch.no_grad():
            for l, w in saved.items():
                attention_modules(model)[l].o_proj.weight.copy_(w)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, base, atol=1e-4)
    torch.testing.assert_close(_logits(model), base)  # restored


def test_uniform_attention_is_the_running_mean_of_the_values_and_touches_no_other_head(tiny):
    model, a = tiny.model, tiny.anatomy
    l, h = HEADS[0]
    with torch.no_grad(), capture(model, layers=[l], keep=("o", "v")) as before:
        model(input_ids=_ids())
    with torch.no_grad(), uniform_heads(model, [(l, h)]), capture(model, layers=[l], keep=("o", "v")) as after:
        model(input_ids=_ids())
    assert _clean(model)
    o, v = after[l].o[0], after[l].v[0]  # [H, S, Dh], [KVH, T, Dh]
    kv = h // (a.n_heads // a.n_kv_heads)
    running = v[kv].cumsum(0) / torch.arange(1, v.shape[1] + 1)[:, None]
    torch.testing.assert_close(o[h], running.to(o.dtype), rtol=1e-4, atol=1e-5)  # uniform over causal keys
    others = [x for x in range(a.n_heads) if x != h]
    torch.testing.assert_close(o[others], before[l].o[0][others])  # the layer's other heads unchanged
    assert not torch.allclose(o[h], before[l].o[0][h], atol=1e-4)


@pytest.mark.parametrize("form", ["zero", "uniform"])
def test_interventions_restore_the_model_also_on_error(tiny, form):
    model = tiny.model
    base = _logits(model)
    iv = head_intervention("x", form, HEADS)
    assert iv.spec == {"kind": {"zero": "zero-heads-output", "uniform": "uniform-heads"}[form],
                       "heads": [[0, 1], [1, 0]]}
    with pytest.raises(RuntimeError, match="boom"):
        with iv.enter(model):
            assert not _clean(model)
            raise RuntimeError("boom")
    assert _clean(model)
    torch.testing.assert_close(_logits(model), base)
    with pytest.raises(ValueError, match="unknown head-masking form"):
        head_intervention("x", "redirect", HEADS)


def test_top_heads_and_same_layer_draws():
    sc = torch.zeros(4, 5)
    sc[2, 3], sc[0, 1], sc[2, 0] = 0.9, 0.8, 0.7
    top = top_heads(sc, 3)
    assert top == [(2, 3), (0, 1), (2, 0)]
    draws = same_layer_draws(top, 5, 6, seed=0)
    assert len(draws) == 6 and draws == same_layer_draws(top, 5, 6, seed=0)
    for d in draws:
        assert sorted(l for l, _ in d) == [0, 2, 2] and not set(d) & set(top) and len(set(d)) == 3
    assert len({tuple(d) for d in draws}) > 1
    with pytest.raises(ValueError, match="only 1 others"):
        same_layer_draws([(0, 0), (0, 1)], 3, 1, 0)
    anywhere = any_layer_draws(top, 4, 5, 6, seed=0)
    assert anywhere == any_layer_draws(top, 4, 5, 6, seed=0) and len(anywhere) == 6
    assert all(len(set(d)) == 3 and not set(d) & set(top) for d in anywhere)
    assert len({l for d in anywhere for l, _ in d}) > 2  # not held to the top heads' layers


def test_possible_sets_says_when_the_same_layer_control_is_fixed():
    """gemma3's case: 4 heads per layer, 2 top heads in layer 0, one in layers 1 and 3: layer 0's
    other two are always drawn, so 1 x 3 x 3 sets exist; anywhere, C(68, 4)."""
    top = [(3, 3), (0, 1), (0, 0), (1, 2)]
    assert possible_sets(top, 18, 4, "same-layer") == 9
    assert possible_sets([(0, 0), (0, 1)], 18, 4, "same-layer") == 1
    assert possible_sets(top, 18, 4, "any-layer") == 814385
    assert all(sorted(x for x in d if x[0] == 0) == [(0, 2), (0, 3)] for d in same_layer_draws(top, 4, 5, 0))


# ---------------------------------------------------------------- planted runs: the check must fail

@dataclass
class PlantedHeads:
    """A QA run double: the retrieval score ``score`` [L, H], and a gold log-prob where
    masking a head costs ``cost[l, h]`` nats (times per-question noise), whatever the form."""
    score: torch.Tensor
    cost: np.ndarray
    cfg: QAConfig = field(default_factory=lambda: QAConfig(task="synthetic"))
    loaded: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(name="planted"))
    asked: list = field(default_factory=list)
    answered: list = field(default_factory=list)

    def head_scores(self, reading=None):
        return SimpleNamespace(retrieval=self.score)

    def gold_logprob(self, interventions, questions=None):
        rng = np.random.default_rng(1)
        n = questions or 30
        base = rng.normal(-3, 1, (3, n))
        out = {"none": base}
        for iv in interventions:
            self.asked.append(iv.spec["kind"])
            c = sum(self.cost[l, h] for l, h in iv.spec["heads"])
            out[iv.name] = base - c * rng.uniform(0.5, 1.5, (3, n)) + rng.normal(0, 0.2, (3, n))
        return out

    def correctness_under(self, interventions, questions=None):
        """A right answer is lost with probability min(1, cost / 5) of the masked heads."""
        return planted_correctness(interventions, lambda iv: sum(self.cost[l, h] for l, h in iv.spec["heads"]), 5,
                                   self.answered, questions)


def _planted(matters_is_scored: bool, seed=0):
    """smollm2's shape (30 × 9); 14 heads matter (cost 1 nat each, the others 0.05)."""
    L, H = 30, 9
    g = np.random.default_rng(seed)
    flat = g.permutation(L * H)
    matters, scored = flat[:14], (flat[:14] if matters_is_scored else flat[14:28])
    cost = np.full(L * H, 0.05)
    cost[matters] = 1.0
    score = torch.rand(L * H, generator=torch.Generator().manual_seed(seed)) * 0.3
    score[torch.as_tensor(scored)] = 0.9
    return PlantedHeads(score.view(L, H), cost.reshape(L, H))


@pytest.mark.parametrize("form", ["zero", "uniform"])
def test_b_heads_fails_when_the_retrieval_score_marks_random_heads(form):
    check = check_by_key(f"B-heads-{form}-synthetic")
    run = MEASURES[check.measure]
    for seed in (0, 1):
        bad = _planted(False, seed)  # random heads planted as the retrieval set
        m = run(bad, seed=0, **check.args)
        assert judge(m.estimate, check.criterion).outcome != SUPPORTED
        kind = {"zero": "zero-heads-output", "uniform": "uniform-heads"}[form]
        assert bad.asked == [kind] * (1 + check.args["draws"])  # the top set and each draw
        assert m.estimate.extra["k"] == 14 and m.estimate.n == check.args["questions"]
    good = _planted(True)
    m = run(good, seed=0, **check.args)
    assert judge(m.estimate, check.criterion).outcome == SUPPORTED
    assert m.figure.form == form and set(m.figure.change) == {"top14", *(f"random14-{d}" for d in range(5))}
    assert len(m.figure.change["top14"]) == 3
    # accuracy of the same interventions and questions beside the log-prob (the primary k only)
    assert good.answered == ["top14", *(f"random14-{d}" for d in range(5))]
    acc = m.estimate.extra["accuracy"]
    assert acc["contrast"]["interval"][1] < 0 and acc["top_minus_none"] < acc["random_minus_none"]
    assert set(m.figure.acc_change) == set(m.figure.change)
    smaller = PlantedHeads(good.score, good.cost)
    alt = run(smaller, seed=0, **{**check.args, **next(iter(check.alternatives.values()))})
    assert not smaller.answered and "accuracy" not in alt.estimate.extra
    # the control drawn from every layer is the check's alternative; it still separates planted heads
    anywhere = PlantedHeads(good.score, good.cost)
    alt = run(anywhere, seed=0, **{**check.args, **check.alternatives["random heads of any layer"]})
    assert judge(alt.estimate, check.criterion).outcome == SUPPORTED
    assert alt.estimate.extra["control"] == "random heads of any layer"
    assert alt.estimate.extra["possible_random_sets"] > alt.estimate.extra["distinct_random_sets"] == 5
    for seed in (0, 1):
        bad = _planted(False, seed)
        alt = run(bad, seed=0, **{**check.args, **check.alternatives["random heads of any layer"]})
        assert judge(alt.estimate, check.criterion).outcome != SUPPORTED


def test_c5e_and_c5f_are_marked_precondition_failed_where_b_heads_does_not_hold():
    """Issue 19 §1: where the retrieval heads cost no more than random heads, the report
    marks C5e/C5f on that model and task (not elsewhere), naming the B-heads row."""
    from ropedim.record import ClaimRecord
    from ropedim.report import Cell
    from ropedim.robustness import annotate

    def rec(claim, model, task, verdict, variant="x"):
        return ClaimRecord(test_id=f"{claim}-{model}-{variant}-{task}", claim=claim, check=f"{claim}-{variant}",
                           model=model, verdict=verdict, reason="", paper_value="", subject={"task": task})
    rows = [rec("B-heads", "m", "nq", "not supported", "zero"), rec("B-heads", "m", "synthetic", "supported", "zero"),
            rec("C5e", "m", "nq", "supported"), rec("C5f", "m", "nq", "inconclusive"),
            rec("C5e", "m", "synthetic", "supported"), rec("C5e", "other", "nq", "supported"),
            rec("C5d", "m", "nq", "supported")]
    annotate(rows)
    assert rows[2].precondition_failed == ["B-heads-m-zero-nq"] == rows[3].precondition_failed
    assert all(r.precondition_failed is None for r in rows[4:])
    assert Cell(rows[2:4]).blocked and not Cell(rows[4:5]).blocked
    # a "not supported" whose alternatives disagree (fragile) puts the precondition in doubt, not failed
    rows[0].alternatives = {"1% of heads": {"verdict": "supported"}}
    annotate(rows)
    assert rows[0].fragile and rows[2].precondition_failed is None
    assert rows[2].precondition_in_doubt == ["B-heads-m-zero-nq"] == rows[3].precondition_in_doubt
    assert not Cell(rows[2:4]).blocked and Cell(rows[2:4]).doubted
