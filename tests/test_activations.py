"""Beyond the paper, issue 19 (§3, §4): frequency use in activations (B-act) and massive
query values (B-massive). The captured reductions equal a direct computation; the
mean-replacement hook replaces exactly one dim per head and is removed on exit; and every
check has a control that makes it fail: planted activations whose pair norms are flat by
construction (no θ order), local heads that use no more high frequencies than the others,
an ablation whose massive dim costs no more than a random one, and an untrained model of
SmolLM2's architecture run end to end (it shows neither a trend nor massive values in the
low frequencies)."""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from claims.table import check_by_key
from ropedim import models
from ropedim.activations import (ActivationStats, compute_activation_stats, pair_rank, replace_query_dims)
from ropedim.anatomy import anatomy_of
from ropedim.hooks import capture
from ropedim.measures import MEASURES
from ropedim.prompts import build_prompts
from ropedim.qa.config import QAConfig
from ropedim.verdict import INCONCLUSIVE, SUPPORTED, judge


pytestmark = pytest.mark.usefixtures("one_thread")


def _check(key):
    return check_by_key(key)


def _judge(check, qa):
    return judge(MEASURES[check.measure](qa, seed=0, **check.args).estimate, check.criterion)


@pytest.fixture(scope="module")
def random_smollm2():
    """SmolLM2-135M's architecture with seeded random weights, and its tokenizer."""
    from transformers import AutoModelForCausalLM
    real = models.load_cached("smollm2")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(real.model.config, dtype=torch.float32).eval()
    return models.Loaded("random-smollm2", model, real.tokenizer, anatomy_of(model), "tiny", real.prompt_style)


# ---------------------------------------------------------------- planted activations

@dataclass
class PlantedAct:
    """A QA run (``ropedim.qa.study.QARun`` double) holding planted activation statistics."""
    loaded: models.Loaded
    stats: ActivationStats
    logprob: dict = field(default_factory=dict)
    cfg: QAConfig = field(default_factory=lambda: QAConfig(task="synthetic"))
    asked: list = field(default_factory=list)

    def activation_stats(self):
        return self.stats

    def gold_logprob(self, interventions, questions=None):
        self.asked += [iv.name for iv in interventions]
        return self.logprob


def _storage(paper: torch.Tensor, anatomy) -> torch.Tensor:
    """[L, H, P] in θ order -> storage order of the pairs."""
    rank = pair_rank(anatomy)  # [L, P]
    return torch.gather(paper, -1, rank[:, None, :].expand_as(paper))


def _planted_stats(anatomy, trend: float = 0.0, local_heads: int = 0, high: float = 1.0, massive: str | None = None,
                   seed: int = 0) -> ActivationStats:
    """Pair norms = 1 + trend·(θ rank) + noise (trend 0: flat by construction); the first
    ``local_heads`` heads attend locally and have their highest-frequency pairs × ``high``;
    ``massive``: each head's largest |q| dim put in the "low" or "high" frequency half."""
    g = torch.Generator().manual_seed(seed)
    L, H, KVH, P, Dh = anatomy.n_layers, anatomy.n_heads, anatomy.n_kv_heads, anatomy.n_pairs, anatomy.head_dim
    E = 4
    ramp = 1 + trend * torch.arange(P).float() / P
    q = ramp * (1 + 0.2 * torch.rand(E, L, H, P, generator=g))
    k = ramp * (1 + 0.2 * torch.rand(E, L, KVH, P, generator=g))
    local = 0.2 * torch.rand(E, L, H, generator=g)
    flat = local.view(E, -1)
    flat[:, :local_heads] = 0.9
    band = max(1, round(P / 8))
    qf = q.view(E, L * H, P)
    qf[:, :local_heads, :band] *= high
    q = torch.stack([_storage(x, anatomy) for x in q])
    k = torch.stack([_storage(x, anatomy) for x in k])
    q_abs = torch.rand(E, L, H, Dh, generator=g)
    if massive:
        paper_dim = {"low": Dh - 1, "high": 0}[massive]  # the lowest / highest frequency coordinate
        for l in range(L):
            j = int(torch.argsort(anatomy.rank[l], stable=True)[paper_dim])
            q_abs[:, l, :, j] = 5.0
    return ActivationStats(q, k, q_abs, torch.zeros(L, H, Dh), local, [100] * E, E, "planted")


def test_act_trend_fails_on_flat_norms_and_passes_a_planted_trend(random_smollm2):
    """Pair norms flat by construction (noise with no θ order): the C5a statistic on
    activations is not supported, for the query and the key; a planted rise is."""
    a = random_smollm2.anatomy
    for check in map(_check, ("B-act-synthetic", "B-act-key-synthetic")):
        assert _judge(check, PlantedAct(random_smollm2, _planted_stats(a, trend=0.0))).outcome != SUPPORTED
        assert _judge(check, PlantedAct(random_smollm2, _planted_stats(a, trend=1.0))).outcome == SUPPORTED


def test_local_contrast_fails_when_local_heads_use_no_more_high_frequencies(random_smollm2):
    a = random_smollm2.anatomy
    check = _check("B-act-local-synthetic")
    same = PlantedAct(random_smollm2, _planted_stats(a, local_heads=20, high=1.0))
    assert _judge(check, same).outcome != SUPPORTED
    lower = PlantedAct(random_smollm2, _planted_stats(a, local_heads=20, high=0.5))
    assert _judge(check, lower).outcome != SUPPORTED
    more = PlantedAct(random_smollm2, _planted_stats(a, local_heads=20, high=3.0))
    assert _judge(check, more).outcome == SUPPORTED
    few = PlantedAct(random_smollm2, _planted_stats(a, local_heads=2, high=3.0))
    v = _judge(check, few)
    assert v.outcome == INCONCLUSIVE and "too few local heads" in v.reason


def test_massive_share_fails_when_the_massive_dims_are_high_frequency_or_random(random_smollm2):
    a = random_smollm2.anatomy
    check = _check("B-massive-synthetic")
    for planted in ("high", None):
        assert _judge(check, PlantedAct(random_smollm2, _planted_stats(a, massive=planted))).outcome != SUPPORTED
    assert _judge(check, PlantedAct(random_smollm2, _planted_stats(a, massive="low"))).outcome == SUPPORTED


def test_massive_ablation_fails_when_the_massive_dim_costs_no_more_than_a_random_one(random_smollm2):
    a = random_smollm2.anatomy
    check = _check("B-massive-ablation-synthetic")
    rng = np.random.default_rng(0)
    none = rng.normal(-2, 1, (3, 30))
    names = ["massive-mean", *(f"random-mean-{d}" for d in range(check.args["draws"]))]
    same = PlantedAct(random_smollm2, _planted_stats(a), {"none": none, **{n: none - 0.5 + rng.normal(0, 0.3, none.shape)
                                                                           for n in names}})
    assert _judge(check, same).outcome != SUPPORTED
    assert same.asked == names  # the massive replacement and each random draw, "none" added by the study
    worse = PlantedAct(random_smollm2, _planted_stats(a), {**same.logprob, "massive-mean": none - 2.0})
    assert _judge(check, worse).outcome == SUPPORTED


# ---------------------------------------------------------------- the real capture

def _prompts(loaded, n=2):
    from ropedim.qa_data import synthetic_task
    return build_prompts(synthetic_task(n, 3, 1, seed=0), loaded.prompt_style, loaded.tokenizer)


def test_the_reductions_equal_a_direct_computation():
    """Pair norms from the pre-RoPE query (and the key, whose pair norm RoPE keeps), mean
    |q| and the same/previous-token attention mass, checked on tiny-llama."""
    loaded = models.load_cached("tiny-llama")
    (p,) = _prompts(loaded, 1)
    st = compute_activation_stats(loaded, [p])
    from ropedim.prompts import tokenize_prompt
    ids = torch.tensor([tokenize_prompt(p, loaded.tokenizer).input_ids])
    a = loaded.anatomy
    P = a.n_pairs
    with torch.no_grad(), capture(loaded.model, keep=("q_pre", "q", "k")) as cap:
        loaded.model(input_ids=ids, output_attentions=False)
    for layer in range(a.n_layers):
        q = cap[layer].q_pre[0, :, 1:]  # [H, S, Dh]
        ref = torch.sqrt(q[..., :P] ** 2 + q[..., P:] ** 2).mean(1)
        torch.testing.assert_close(st.q_pair[0, layer], ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(st.q_abs[0, layer], q.abs().mean(1), rtol=1e-4, atol=1e-5)
        k = cap[layer].k[0, :, 1:]
        torch.testing.assert_close(st.k_pair[0, layer], torch.sqrt(k[..., :P] ** 2 + k[..., P:] ** 2).mean(1))
    assert st.n_examples == 1 and st.tokens == [ids.shape[1] - 1]
    assert ((st.local >= 0) & (st.local <= 1 + 1e-5)).all()
    # the key's pair norm is RoPE-invariant: the pre-RoPE key from k_proj gives the same norms
    with torch.no_grad():
        seen = {}
        h = loaded.model.model.layers[0].self_attn.k_proj.register_forward_hook(lambda m, i, o: seen.setdefault("k", o))
        loaded.model(input_ids=ids)
        h.remove()
    kp = seen["k"][0].view(ids.shape[1], a.n_kv_heads, a.head_dim).transpose(0, 1)[:, 1:]
    torch.testing.assert_close(st.k_pair[0, 0], torch.sqrt(kp[..., :P] ** 2 + kp[..., P:] ** 2).mean(1),
                               rtol=1e-4, atol=1e-5)


def test_replacing_query_dims_changes_exactly_those_dims_and_is_removed():
    loaded = models.load_cached("tiny-llama")
    a = loaded.anatomy
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    dims = torch.randint(0, a.head_dim, (a.n_layers, a.n_heads), generator=torch.Generator().manual_seed(0))
    vals = torch.full((a.n_layers, a.n_heads), 7.0)
    iv = replace_query_dims("x", dims, vals)
    with torch.no_grad(), capture(loaded.model, keep=("q_pre",)) as before:
        loaded.model(input_ids=ids)
    with torch.no_grad(), iv.enter(loaded.model), capture(loaded.model, keep=("q_pre",)) as after:
        loaded.model(input_ids=ids)
    q0, q1 = before[0].q_pre[0], after[0].q_pre[0]  # layer 0: same input, [H, S, Dh]
    changed = (q0 != q1).any(1)  # [H, Dh]
    expect = torch.zeros_like(changed)
    expect[torch.arange(a.n_heads), dims[0]] = True
    assert torch.equal(changed, expect) and torch.all(q1[torch.arange(a.n_heads), :, dims[0]] == 7.0)
    with torch.no_grad(), capture(loaded.model, keep=("q_pre",)) as again:
        loaded.model(input_ids=ids)
    torch.testing.assert_close(again[0].q_pre, before[0].q_pre)  # the hook is gone
    assert iv.spec != replace_query_dims("y", dims, vals + 1).spec  # the values are in the cache key


def test_an_untrained_model_shows_neither_trend_nor_massive_low_frequencies(random_smollm2, tmp_path, monkeypatch):
    """End to end on SmolLM2's architecture with random weights (the real capture, the
    study's analysis examples): no θ trend of the pair norms, no lean of the massive dims."""
    from ropedim.qa.study import Study
    monkeypatch.setenv("ROPEDIM_CACHE", str(tmp_path / "cache"))
    study = Study(random_smollm2, QAConfig(task="synthetic", n=2, k=3, n_analysis=2, batch_size=2), {})
    for check in map(_check, ("B-act-synthetic", "B-act-key-synthetic", "B-massive-synthetic")):
        v = _judge(check, study)
        assert v.outcome != SUPPORTED, (check.key, v.reason)
    assert len(list((tmp_path / "cache" / "activations").glob("*.safetensors"))) == 1  # computed once, cached


def test_beyond_checks_carry_the_beyond_mark_and_readable_ids():
    """`-k beyond` (or `-m beyond`) selects the beyond-the-paper checks; ids read like
    B-act-smollm2-synthetic."""
    from fixtures.parametrize import _marks
    for key in ("B-act-synthetic", "B-act-key-synthetic", "B-act-local-synthetic", "B-massive-synthetic",
                "B-massive-ablation-synthetic"):
        c = _check(key)
        assert c.beyond and [m.name for m in _marks(c)] == ["beyond"]
    assert _check("B-act-local-synthetic").test_id("smollm2") == "B-act-smollm2-local-synthetic"
    assert _marks(check_by_key("C5a")) == ()
