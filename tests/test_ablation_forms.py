"""Beyond the paper, issue 19 (§2): the ablation's form (ropedim.ablation_forms). Each form
is the intervention it says and restores the model: mean replacement with zero means is the
paper's zeroing (whole pairs commute with RoPE); the storage-index form zeroes the first/last
k storage coordinates before RoPE; zeroing query and key equals zeroing the query alone where
every head of a KV group has the same mask (m² = m), and differs where a KV head is shared
with an unmasked head (GQA). The B-forms checks fail on a planted run whose masked dims cost
nothing, pass where the last dims cost, and a verdict that differs between forms is fragile."""

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from claims.table import check_by_key
from doubles import planted_correctness
from ropedim import models
from ropedim.ablation_forms import FORMS, form_intervention, key_mask, storage_mask
from ropedim.anatomy import attention_configs, attention_modules
from ropedim.hooks import BeforeRoPE, masked
from ropedim.measures import MEASURES
from ropedim.qa.config import QAConfig
from ropedim.qa.masks import theta_end_mask
from ropedim.record import ClaimRecord
from ropedim.robustness import annotate
from ropedim.verdict import SUPPORTED, judge

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return models.load_cached("tiny-llama")  # 3 layers, 4 heads of 16 dims, 2 KV heads


def _logits(model):
    with torch.no_grad():
        return model(input_ids=torch.arange(3, 17)[None]).logits.float()


def _clean(model):
    return (all(not a.__dict__.get(w) for a in attention_modules(model) for w in ("_ropedim_pre", "_ropedim_post"))
            and not any(a.q_proj._forward_hooks or a.k_proj._forward_hooks for a in attention_modules(model))
            and not any(c._attn_implementation.startswith("ropedim_") for c in attention_configs(model)))


def _pairs(anatomy, which, heads, k=4):
    return theta_end_mask(anatomy, which, k, heads)


def test_storage_mask_takes_the_first_or_last_storage_coordinates_of_the_masked_heads():
    pairs = torch.ones(2, 3, 8)
    pairs[1, 2, [0, 4]] = 0  # one rotary pair (storage 0 with 4) of head (1, 2)
    first, last = storage_mask(pairs, "first"), storage_mask(pairs, "last")
    assert first[1, 2].tolist() == [0, 0, 1, 1, 1, 1, 1, 1] and last[1, 2].tolist() == [1] * 6 + [0, 0]
    assert (first[0] == 1).all() and (first[1, :2] == 1).all()
    with pytest.raises(ValueError, match="first' or 'last"):
        storage_mask(pairs, "middle")


def test_key_mask_zeroes_a_kv_dim_where_any_query_head_of_its_group_does():
    q = torch.ones(1, 4, 6)
    q[0, 1, 2] = 0  # head 1 reads KV head 0
    got = key_mask(q, torch.tensor([0, 0, 1, 1]), 2)
    assert got[0, 0].tolist() == [1, 1, 0, 1, 1, 1] and (got[0, 1] == 1).all()


def test_mean_form_with_zero_means_is_the_papers_zeroing(tiny):
    a = tiny.anatomy
    pairs = _pairs(a, "last", [(0, 1), (2, 3)])
    zero = form_intervention("z", "zero-pairs-query", pairs, "last", a)
    mean = form_intervention("m", "mean-pairs-query", pairs, "last", a, torch.zeros(pairs.shape))
    base = _logits(tiny.model)
    with zero.enter(tiny.model):
        z = _logits(tiny.model)
    with mean.enter(tiny.model):
        m = _logits(tiny.model)
    assert _clean(tiny.model)
    assert not torch.allclose(z, base, atol=1e-4)
    torch.testing.assert_close(m, z, atol=1e-5, rtol=1e-5)
    shifted = form_intervention("m2", "mean-pairs-query", pairs, "last", a, torch.full(pairs.shape, 0.5))
    with shifted.enter(tiny.model):
        assert not torch.allclose(_logits(tiny.model), z, atol=1e-4)  # the mean is put in, not 0
    with pytest.raises(ValueError, match="mean per dim"):
        form_intervention("m3", "mean-pairs-query", pairs, "last", a)


def test_storage_form_zeroes_storage_coordinates_before_rope(tiny):
    a = tiny.anatomy
    pairs = _pairs(a, "first", [(1, 0)])
    iv = form_intervention("s", "zero-storage-query", pairs, "first", a)
    with iv.enter(tiny.model):
        got = _logits(tiny.model)
    with masked(tiny.model, BeforeRoPE(storage_mask(pairs, "first"))):
        want = _logits(tiny.model)
    assert _clean(tiny.model)
    torch.testing.assert_close(got, want)
    with masked(tiny.model, pairs):
        assert not torch.allclose(_logits(tiny.model), got, atol=1e-4)  # not the pairs form


def test_query_and_key_form_equals_query_only_where_the_whole_kv_group_is_masked(tiny):
    a = tiny.anatomy
    group0 = [(1, h) for h in range(a.n_heads) if int(a.group[h]) == 0]  # both heads reading KV head 0
    whole = _pairs(a, "last", group0)
    q_only, qk = (form_intervention(f, f, whole, "last", a) for f in ("zero-pairs-query", "zero-pairs-query-key"))
    with q_only.enter(tiny.model):
        want = _logits(tiny.model)
    with qk.enter(tiny.model):
        got = _logits(tiny.model)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    half = _pairs(a, "last", group0[:1])  # the other head of the group shares the masked key
    with form_intervention("q", "zero-pairs-query", half, "last", a).enter(tiny.model):
        q1 = _logits(tiny.model)
    with form_intervention("qk", "zero-pairs-query-key", half, "last", a).enter(tiny.model):
        qk1 = _logits(tiny.model)
    assert not torch.allclose(q1, qk1, atol=1e-4)
    assert _clean(tiny.model)


def test_interventions_restore_the_model_on_error(tiny):
    a = tiny.anatomy
    pairs = _pairs(a, "last", [(0, 0)])
    base = _logits(tiny.model)
    for f in FORMS:
        with pytest.raises(RuntimeError, match="boom"):
            with form_intervention(f, f, pairs, "last", a, torch.zeros(pairs.shape)).enter(tiny.model):
                raise RuntimeError("boom")
        assert _clean(tiny.model)
    torch.testing.assert_close(_logits(tiny.model), base)


# ---------------------------------------------------------------- planted runs: the check must fail

@dataclass
class PlantedDims:
    """A QA run double: retrieval heads from ``score``; masking the last dims costs
    ``cost_last[form]`` nats, the first dims ``cost_first`` (times per-question noise)."""
    cost_last: dict
    cost_first: float = 0.05
    cfg: QAConfig = field(default_factory=lambda: QAConfig(task="synthetic"))
    loaded: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(
        name="planted", anatomy=models.load_cached("tiny-llama").anatomy))
    asked: list = field(default_factory=list)
    answered: list = field(default_factory=list)

    def head_scores(self, reading=None):
        s = torch.zeros(3, 4)
        s[1, 0] = s[2, 3] = 0.9
        return SimpleNamespace(retrieval=s)

    def activation_stats(self):
        return SimpleNamespace(q_mean=torch.zeros(3, 4, 16))

    def gold_logprob(self, interventions, questions=None):
        rng = np.random.default_rng(1)
        n = questions or 30
        base = rng.normal(-3, 1, (3, n))
        out = {"none": base}
        for iv in interventions:
            self.asked.append(iv.name)
            form, which = iv.name.split("/")
            c = self.cost_last.get(form, 0.0) if which == "last" else self.cost_first
            out[iv.name] = base - c * rng.uniform(0.5, 1.5, (3, n)) + rng.normal(0, 0.1, (3, n))
        return out

    def _cost(self, iv):
        form, which = iv.name.split("/")
        return self.cost_last.get(form, 0.0) if which == "last" else self.cost_first

    def correctness_under(self, interventions, questions=None):
        """Right answers lost with probability min(1, cost / 2) per prompt."""
        return planted_correctness(interventions, self._cost, 2, self.answered, questions)


@pytest.mark.parametrize("variant", ["first-vs-last", "last"])
def test_b_forms_fails_when_the_masked_dims_cost_nothing(variant):
    check = check_by_key(f"B-forms-{variant}-synthetic")
    run = MEASURES[check.measure]
    flat = PlantedDims({f: 0.0 for f in FORMS}, cost_first=0.0)  # a head whose output ignores the masked dims
    m = run(flat, seed=0, **check.args)
    assert judge(m.estimate, check.criterion).outcome != SUPPORTED
    assert sorted(flat.asked) == sorted(f"{f}/{w}" for f in FORMS for w in ("first", "last"))
    assert m.estimate.n == check.args["questions"] and m.estimate.extra["retrieval_heads"] == 2
    good = PlantedDims({f: 1.0 for f in FORMS})
    m = run(good, seed=0, **check.args)
    assert judge(m.estimate, check.criterion).outcome == SUPPORTED
    assert set(m.figure.change) == {f"{f}/{w}" for f in FORMS for w in ("first", "last")}
    # accuracy of the same forms, masks and questions beside the log-prob: the last dims' loss shows in it
    assert sorted(good.answered) == sorted(good.asked) and set(m.figure.acc_change) == set(m.figure.change)
    acc = m.estimate.extra["accuracy"]
    assert acc["by_form"]["zero-pairs-query"]["last_minus_none"] < -20 and acc["unit"] == "points"
    assert acc["contrast"]["value"] == acc["by_form"]["zero-pairs-query"]["contrast"]["value"]


def test_a_verdict_that_differs_between_forms_is_fragile():
    check = check_by_key("B-forms-last-synthetic")
    run = MEASURES[check.measure]
    mixed = PlantedDims({"zero-pairs-query": 1.0, "mean-pairs-query": 0.0, "zero-storage-query": 1.0,
                         "zero-pairs-query-key": 1.0})
    records = []
    for costs in (mixed, PlantedDims({f: 1.0 for f in FORMS})):
        m = run(costs, seed=0, **check.args)
        alts = {}
        for label, args in check.alternatives.items():
            est = run(costs, seed=0, **{**check.args, **args}).estimate
            alts[label] = {"value": est.value, "interval": est.interval, "verdict": judge(est, check.criterion).outcome}
        r = ClaimRecord.measured(check, "planted", m, judge(m.estimate, check.criterion),
                                 SimpleNamespace(to_json=lambda: {}), config={}, profile="default", seed=0,
                                 seconds=0.0, alternatives=alts)
        records.append(r)
    annotate(records)
    assert records[0].alternatives["mean-pairs-query"]["verdict"] != SUPPORTED
    assert records[0].fragile and not records[1].fragile
    assert records[0].readings_passing is None  # no Table 1 reading is claimed for forms
