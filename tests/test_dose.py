"""Beyond the paper, the dose-response (ropedim.dose, issue 14): the fast log-prob equals
one forward pass per prompt and mask with the mask from the question on; the masks mask
what they say (whole pairs, seeded, per head); the measure's contrasts fail on planted
runs where the first dims are the important ones, or where "first" is random dims."""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from claims.table import CHECKS
from ropedim import models
from ropedim.dose import dose_masks, questions_needed, random_pairs_mask
from ropedim.logprob import fast_gold_logprob
from ropedim.hooks import masked
from ropedim.logprob import NONE, Intervention, answer_ids, gold_logprob
from ropedim.measures import MEASURES
from ropedim.prompts import build_prompts, encode
from ropedim.qa.analysis import HeadScores
from ropedim.qa.config import QAConfig
from ropedim.qa.masks import theta_end_mask
from ropedim.rope import pair_partner
from ropedim.verdict import SUPPORTED, judge

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def tiny():
    return models.load_cached("tiny-llama")


def _reference(loaded, prompt, answer, mask) -> float:
    """One forward pass of prompt + answer, the mask on queries from the question on."""
    ids, q = encode(prompt, loaded.tokenizer)
    a = answer_ids(prompt, answer, loaded.tokenizer)
    with torch.no_grad(), masked(loaded.model, mask, from_position=q):
        logits = loaded.model(input_ids=torch.tensor([ids + a])).logits[0].float()
    logp = logits.log_softmax(-1)[len(ids) - 1:len(ids) + len(a) - 1]
    return float(logp.gather(-1, torch.tensor(a)[:, None]).sum())


def test_fast_logprob_equals_a_forward_pass_masked_from_the_question_on(tiny, qa_examples):
    exs = qa_examples(4)
    ps, golds = build_prompts(exs, "plain"), [e.answers[0] for e in exs]
    a = tiny.anatomy
    g = torch.Generator().manual_seed(0)
    variants = {"none": None, "zero-l0": torch.ones(a.n_layers, a.n_heads, a.head_dim),
                "random": (torch.rand(a.n_layers, a.n_heads, a.head_dim, generator=g) > 0.5).float()}
    variants["zero-l0"][0] = 0
    for bs in (1, 3):  # contexts of unequal lengths in one batch: padding must not matter
        got = fast_gold_logprob(tiny, ps, golds, variants, batch_size=bs)
        for name, m in variants.items():
            ref = [_reference(tiny, p, gd, torch.ones_like(variants["random"]) if m is None else m)
                   for p, gd in zip(ps, golds)]
            np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(got["none"], gold_logprob(tiny, ps, golds, [NONE])["none"], rtol=1e-4, atol=1e-4)
    assert not np.allclose(got["random"], got["none"])


def test_masks_are_whole_pairs_seeded_per_head(tiny):
    a = tiny.anatomy
    heads = [(0, 0), (1, 1)]
    m = random_pairs_mask(a, 4, heads, seed=3)
    partner = pair_partner(a.head_dim, a.rotary_dim)
    assert torch.equal(m, m[..., partner])  # whole rotary pairs
    for layer, head in heads:
        assert int((m[layer, head] == 0).sum()) == 4
    others = torch.ones(a.n_layers, a.n_heads, dtype=torch.bool)
    others[0, 0] = others[1, 1] = False
    assert bool((m[others] == 1).all())  # other heads untouched
    assert torch.equal(m, random_pairs_mask(a, 4, heads, seed=3))
    assert not torch.equal(m, random_pairs_mask(a, 4, heads, seed=4))
    ms = dose_masks(a, heads, (1 / 4, 1 / 2), draws=3, seed=0)
    k = a.head_dim // 4
    assert {f"first-{k}", f"last-{k}", f"random0-{k}", f"random2-{k}"} <= set(ms)
    assert not torch.equal(ms[f"random0-{k}"], ms[f"random1-{k}"])  # draws differ


def test_questions_needed_follows_the_variance_formula():
    """n · (half-width / |effect|)² over clustered questions: (z · sd of the question means / mean)²."""
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 2.0, (3, 60))
    q = d.mean(0)
    expected = (1.96 * q.std(ddof=1) / q.mean()) ** 2
    assert questions_needed(d) == pytest.approx(expected, rel=0.2)
    assert questions_needed(np.concatenate([d, d], 1)) == pytest.approx(expected, rel=0.2)  # not n itself


# --- planted runs: the claims must fail where their premise is false --------------------

@dataclass
class PlantedLogprob:
    """A QA run whose gold log-prob under a mask is planted: each masked dim of a
    retrieval head costs ``weight[θ position]`` nats (plus per-question noise)."""
    loaded: models.Loaded
    weight: np.ndarray  # [Dh] cost of masking each dim, θ order
    relabel_first_as_random: bool = False
    cfg: QAConfig = field(default_factory=lambda: QAConfig(task="synthetic", k=10, mode="faithful"))
    n: int = 30

    def head_scores(self, reading="literal"):
        a = self.loaded.anatomy
        retrieval = torch.full((4, a.n_layers, a.n_heads), 0.1)
        retrieval[:, :, 0] = 0.9  # head 0 of every layer retrieves
        z = torch.zeros(a.n_layers, a.n_heads)
        return HeadScores(retrieval.mean(0), retrieval, z, torch.ones(a.n_layers, a.n_heads, a.head_dim),
                          z.bool(), z, 4, "literal")

    def mode_of(self, mode):
        return self.cfg.mode

    def cached_correctness(self, mode):
        return None  # no C5e answers: the record says there is no accuracy comparison

    def correctness_of(self, masks, mode, questions=None):
        """Planted answers: a question stays right under a mask unless its planted cost,
        scaled, beats a per-question draw."""
        lp = self.gold_logprob([Intervention.query_mask(n, m) for n, m in masks.items()], questions)
        rng = np.random.default_rng(2)
        bar = rng.uniform(0, 2, lp["none"].shape)
        out = {"none": (rng.uniform(0, 1, lp["none"].shape) < 0.8).astype(float)}
        out.update({n: out["none"] * ((lp["none"] - v) < bar) for n, v in lp.items() if n != "none"})
        return out

    def gold_logprob(self, interventions, questions=None):
        a = self.loaded.anatomy
        rng = np.random.default_rng(1)
        base = rng.normal(-3, 1, (3, self.n))
        order = torch.argsort(a.rank, dim=-1, stable=True)  # storage index at each θ position
        out = {"none": base}
        for iv in interventions:
            mask = self._mask_of(iv)
            cost = sum(float(self.weight[(mask[layer, 0, order[layer]] == 0).numpy()].sum())
                       for layer in range(a.n_layers))
            out[iv.name] = base - cost * rng.uniform(0.5, 1.5, (3, self.n))
        return out

    def _mask_of(self, iv):
        a = self.loaded.anatomy
        heads = [(layer, 0) for layer in range(a.n_layers)]
        if iv.name.startswith("all-first-"):  # the frontier's every-head masks
            return theta_end_mask(a, "first", int(iv.name.split("-")[2]), heads)
        if self.relabel_first_as_random and iv.name.startswith("first-"):
            return random_pairs_mask(a, int(iv.name.split("-")[1]), heads, 99)
        args = DOSE["first-vs-random"].args  # the masks the measure builds (seed 0)
        return dose_masks(a, heads, args["fractions"], args["draws"], 0)[iv.name]


def _run(check, qa):
    return MEASURES[check.measure](qa, seed=0, **check.args)


DOSE = {c.variant.rsplit("-", 1)[0]: c for c in CHECKS if c.claim == "B-dose" and c.variant.endswith("synthetic")}


@pytest.fixture(scope="module")
def planted_loaded():
    return models.load_cached("tiny-llama")


def _weights(d, where):
    w = np.full(d, 0.01)
    if where == "first":
        w[: d // 4] = 1.0
    elif where == "last":
        w[-d // 4:] = 1.0
    return w


def test_dose_claims_hold_where_the_last_dims_matter(planted_loaded):
    """The checks can pass: the last dims carry the cost, the first nothing."""
    qa = PlantedLogprob(planted_loaded, _weights(planted_loaded.anatomy.head_dim, "last"))
    for check in DOSE.values():
        m = _run(check, qa)
        assert judge(m.estimate, check.criterion).outcome == SUPPORTED, check.key
        assert m.figure.k and set(m.figure.mean) == {"first", "random", "last"}
        acc = m.figure.acc_mean  # the accuracy curves of the same masks
        assert set(acc) == {"first", "random", "last"} and len(acc["first"]) == len(m.figure.panels)
        assert acc["last"][-1][0] < acc["random"][-1][0] < acc["first"][-1][0] <= 0  # at k = D/16, averaged
        assert m.estimate.extra["questions_needed_same_questions"]["logprob"] is not None


def test_first_vs_random_fails_where_the_first_dims_matter(planted_loaded):
    qa = PlantedLogprob(planted_loaded, _weights(planted_loaded.anatomy.head_dim, "first"))
    check = DOSE["first-vs-random"]
    assert judge(_run(check, qa).estimate, check.criterion).outcome != SUPPORTED


def test_first_vs_random_fails_when_first_is_random_dims(planted_loaded):
    """The control of the control: 'first' relabelled as k random pairs costs what random
    pairs cost, so (a) cannot come out supported."""
    qa = PlantedLogprob(planted_loaded, _weights(planted_loaded.anatomy.head_dim, "last"), relabel_first_as_random=True)
    check = DOSE["first-vs-random"]
    assert judge(_run(check, qa).estimate, check.criterion).outcome != SUPPORTED


def test_random_vs_last_fails_where_the_last_dims_do_not_matter(planted_loaded):
    qa = PlantedLogprob(planted_loaded, _weights(planted_loaded.anatomy.head_dim, "first"))
    check = DOSE["random-vs-last"]
    assert judge(_run(check, qa).estimate, check.criterion).outcome != SUPPORTED


def test_a_study_gives_both_modes_cached(tmp_path, monkeypatch):
    """On a real Study: fast and faithful log-probs per position and question, the same
    unmasked; a mask acts differently in the two modes (from the question on / everywhere)."""
    from ropedim.dose import dose_logprobs
    from ropedim.qa.study import Study
    monkeypatch.setenv("ROPEDIM_CACHE", str(tmp_path / "cache"))
    loaded = models.load_cached("tiny-llama")
    study = Study(loaded, QAConfig(task="synthetic", n=3, k=2, n_analysis=1, batch_size=4, max_new_tokens=4), {})
    a = loaded.anatomy
    masks = dose_masks(a, [(0, 0), (1, 1)], (1 / 2,), draws=1, seed=0)
    fast = dose_logprobs(study, masks, "fast")
    faithful = dose_logprobs(study, masks, "faithful")
    n = len(study.qaset.audit.kept)
    assert set(fast) == set(faithful) == {"none", *masks} and fast["none"].shape == (len(study.cfg.positions), n)
    np.testing.assert_allclose(fast["none"], faithful["none"], rtol=1e-4, atol=1e-4)
    assert not np.allclose(fast["last-8"], faithful["last-8"])  # the context is masked only in faithful mode
    assert len(list((tmp_path / "cache" / "logprob").glob("*"))) >= 2
    np.testing.assert_array_equal(dose_logprobs(study, masks, "fast")["last-8"], fast["last-8"])  # cached


def test_study_implements_every_method_of_the_qarun_protocol():
    """The measures read a QA run through ``QARun``; test doubles implement it, so the real
    Study must too (a method written into the Protocol alone passed every double)."""
    from ropedim.qa.study import QARun, Study
    wanted = {n for n, v in vars(QARun).items() if callable(v) and not n.startswith("_")}
    assert wanted and wanted <= {n for n in vars(Study) if callable(getattr(Study, n))}
