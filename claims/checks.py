"""The checks: each testable statement of a claim on one subject, with its statistic (a
named measure of ``ropedim.measures`` and its arguments) and its criterion, whose source
says where the tolerance comes from. Claim tests are generated from this list by the
subject type (``claims/test_claims.py``), so a check added here is collected as it is.

``alternatives`` are the other defensible readings of the paper for a check (Eq. 4's
readings, the toy's initialisation): computed and shown beside the verdict, which is the
primary reading's; a verdict that flips between readings that pass the paper's own
sanity check is marked fragile in the report. ``beyond``: a check the paper does not
make (a confound check, a control), reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ropedim.qa.config import TASKS
from ropedim.qa.masks import LowUtility, RetrievalHeadDims
from ropedim.utility import PRIMARY, READINGS
from ropedim.verdict import NULL99, Criterion

from .paper import (FIG3_RHO, FIG4_RHO, TABLE1, TABLE2, delta_avg, fmt, fmt_rho, position_retention)


# ---------------------------------------------------------------- subjects

@dataclass(frozen=True)
class Identity:
    """A property of RoPE itself (Eq. 2), checked on random cases."""


@dataclass(frozen=True)
class Toy:
    """§4's controlled experiment: heads trained with and without RoPE."""


@dataclass(frozen=True)
class Weights:
    """A model's weights (every ``--model``)."""


@dataclass(frozen=True)
class QA:
    """A model answering a multi-document QA task (every ``--model``)."""
    task: str


SUBJECTS = (Identity, Toy, Weights, QA)
SUBJECT_SLUG = {Identity: "rope", Toy: "toy"}  # what test ids and findings name the subjects that are no model


@dataclass(frozen=True)
class Check:
    claim: str  # paper.CLAIMS id
    variant: str  # what distinguishes checks of one claim: "rope", "first16-nq", ...
    subject: Identity | Toy | Weights | QA
    measure: str  # name in ropedim.measures.MEASURES
    statistic: str  # what the number is, for the report
    criterion: Criterion
    args: dict = field(default_factory=dict, hash=False)  # keyword arguments of the measure
    paper_value: str = ""  # the paper's number for this statistic
    alternatives: dict = field(default_factory=dict, hash=False)  # label -> args that differ: other readings
    beyond: bool = False  # not a claim of the paper: a confound check beside it

    @property
    def key(self) -> str:
        """The check's name in the table and in known findings: claim and variant."""
        return f"{self.claim}-{self.variant}" if self.variant else self.claim

    def test_id(self, model: str) -> str:
        """``C5e-smollm2-first16-nq``; the toy's checks read ``C4a-toy-rope``."""
        return "-".join(p for p in (self.claim, model, self.variant) if p)


# ---------------------------------------------------------------- tolerances and their sources

EIGHTH, QUARTER = 1 / 8, 1 / 4  # the paper's 16 and 32 of 128 dims, as fractions of a head
SIGN = "the paper: the sign of its claim"
NULL_TREND = ("null: the same statistic on a curve whose dims have no θ order (permuted; what an untrained "
              "model's i.i.d. rows give), its 99th percentile for this head size")
MIN_ACCURACY = 10.0  # %, our choice: below this original accuracy an accuracy claim is inconclusive
MIN_SHARE_MASKED = 0.01  # our choice: a mask removing under 1% of the query dims masks almost nothing
MODE_TOLERANCE = 5.0  # points, our choice: fast mode stands in for the paper's faithful masking only
#                       where faithful − fast lies within ±5 points (below every effect the claims turn on)
RETRIEVAL_THRESHOLD = 0.5  # §5.4: "retrieval heads (score > 0.5)"
UTILITY_THRESHOLD = 0.5  # §5.2, Table 1: "utility scores lower than 0.5"
FLOOR = {"min_accuracy": MIN_ACCURACY, "min_share_masked": MIN_SHARE_MASKED, "mode_tolerance": MODE_TOLERANCE}
# Masking modes: C5c as the paper's Table 1 (every head, every position); the retrieval-head
# masks of C5e/C5f fast (from the question on), standing only where the mode check agrees
# (a profile may force one mode: --profile paper masks faithfully everywhere).
TABLE1_MODE, TABLE2_MODE = {"mode": "faithful"}, {"mode": "fast"}

# The query masks of §5.2 and §5.4 (a sweep answers them in this order); the utility mask
# under each reading of Eq. 4 (the primary one is "utility").
MASKS = {m.name: m for m in [
    LowUtility("utility", UTILITY_THRESHOLD, PRIMARY),
    *(LowUtility(f"utility-{r}", UTILITY_THRESHOLD, r) for r in READINGS if r != PRIMARY),
    RetrievalHeadDims("first16", "first", EIGHTH, RETRIEVAL_THRESHOLD),
    RetrievalHeadDims("first32", "first", QUARTER, RETRIEVAL_THRESHOLD),
    RetrievalHeadDims("last16", "last", EIGHTH, RETRIEVAL_THRESHOLD),
    RetrievalHeadDims("last32", "last", QUARTER, RETRIEVAL_THRESHOLD),
]}

# ---------------------------------------------------------------- §2 and §4

INITS = {"N(0, 1/d)": {"init": "1/d"}}  # the toy's other initialisation (trained by --profile paper)
_RATIO = "log ratio of mean |q|,|k|: last eighth / first eighth of dims"
_ASYM = "loss(last quarter removed) − loss(first quarter removed), nats"
CHECKS = [
    Check("C2", "", Identity(), "rope_relative_position",
          "max |RoPE(q_m)·RoPE(k_n) − RoPE(q_m+s)·RoPE(k_n+s)| / |q||k| over random cases",
          Criterion("less", 1e-3, "float32 rounding: the angle m·θ at positions below 8192 is rounded by up to "
                                  "8192·2⁻²⁴ ≈ 5e-4 rad; a score that depended on m itself would differ by order 1"),
          {"cases": 2000, "dims": (64, 128, 256)}, "an identity (Eq. 2)"),
    Check("C4a", "rope", Toy(), "toy_weight_ratio", _RATIO + ", each dim relative to its no-RoPE twin",
          Criterion("greater", 0.0, "the paper: lower weights in the first dims with RoPE; relative to the "
                                    "no-RoPE twin (same seed, init and data) 0 is no effect, whatever the init scale"),
          {"setup": "rope", "fraction": EIGHTH, "relative": True, "init": "1"}, "> 0 (first dims lower)", INITS),
    Check("C4a", "norope", Toy(), "toy_weight_ratio", _RATIO,
          Criterion("within", (-0.1, 0.1), "our choice: no trend is a ratio within ±10%"),
          {"setup": "norope", "fraction": EIGHTH, "relative": False, "init": "1"}, "≈ 0 (no trend)", INITS),
    Check("C4b", "rope-first", Toy(), "toy_removal_delta",
          "loss increase (nats) with the first quarter of dims removed",
          Criterion("less", 0.1, "our choice: 'does not affect the loss significantly' is under 0.1 nats"),
          {"setup": "rope", "which": "first", "fraction": QUARTER, "init": "1"}, "≈ 0 (barely changes)", INITS),
    Check("C4b", "rope-asymmetry", Toy(), "toy_removal_asymmetry", _ASYM,
          Criterion("greater", 1.0, "our choice: 'greatly increases' is an asymmetry above 1 nat"),
          {"setup": "rope", "fraction": QUARTER, "init": "1"}, "large (last dims matter, first do not)", INITS),
    Check("C4b", "norope", Toy(), "toy_removal_asymmetry", _ASYM,
          Criterion("within", (-0.25, 0.25), "our choice: 'no asymmetry' is a difference within ±0.25 nats"),
          {"setup": "norope", "fraction": QUARTER, "init": "1"}, "≈ 0 (no asymmetry)", INITS),
]

# ---------------------------------------------------------------- §5, W_q row norms (C5a)

_TREND = "Spearman(θ rank, the curve averaged over layers and heads)"
CHECKS += [
    Check("C5a", "", Weights(), "wq_trend", f"{_TREND}, W_q row L1 norm", Criterion("greater", NULL99, NULL_TREND),
          {"scaled": False}, "increasing (all three LLMs, Fig. 2a)"),
    Check("C5a", "scaled", Weights(), "wq_trend", f"{_TREND}, rows scaled by |q_norm weight| (q/k-norm models)",
          Criterion("greater", NULL99, NULL_TREND), {"scaled": True}, "increasing (all three LLMs, Fig. 2a)"),
]

# ---------------------------------------------------------------- §5.2-5.4, on every task

# Every check that reads utility scores is also computed under the other readings of
# Eq. 4 (the report's sensitivity table); its verdict is the primary reading's.
READING_ALTERNATIVES = {r: {"reading": r} for r in READINGS if r != PRIMARY}


def _corr_checks(claim, measure, task, what, rho, extra):
    """The paper's pooled ρ for the first/last dims, and beyond it (confounds): the same
    within layers, and the within-head contrast of the last minus the first dims."""
    qa, args = QA(task), {"fraction": EIGHTH, "reading": PRIMARY, **extra}
    out = []
    for which, sign, col in (("first", "less", 0), ("last", "greater", 1)):
        out.append(Check(claim, f"{which}16-{task}", qa, measure, f"Pearson ρ({what}, mean u of the {which} eighth) "
                         "over heads", Criterion(sign, 0.0, SIGN), {**args, "which": which}, fmt_rho(rho, col),
                         READING_ALTERNATIVES))
        out.append(Check(claim, f"within-layer-{which}16-{task}", qa, measure,
                         f"as {claim} {which}16, within layers (each layer's mean removed)",
                         Criterion(sign, 0.0, SIGN + "; beyond the paper: pooled ρ can reflect which layers "
                                                    "retrieve rather than θ"),
                         {**args, "which": which, "form": "within-layer"}, "", READING_ALTERNATIVES, beyond=True))
    out.append(Check(claim, f"contrast-{task}", qa, measure, f"Pearson ρ({what}, u of the last eighth − the first)",
                     Criterion("greater", 0.0, "the paper's two signs together: heads that retrieve use the last "
                                               "dims more than the first; beyond the paper"),
                     {**args, "which": "contrast"}, "", READING_ALTERNATIVES, beyond=True))
    return out


for task in TASKS:
    qa = QA(task)
    CHECKS += [
        Check("C5b", task, qa, "utility_trend", f"{_TREND}, utility u", Criterion("greater", NULL99, NULL_TREND),
              {"reading": PRIMARY}, "increasing (Fig. 2b)", READING_ALTERNATIVES),
        Check("C5c", task, qa, "masked_accuracy_delta",
              "masked (u < 0.5) − original accuracy, points, avg over positions",
              Criterion("greater", -3.0, "the paper: 'does not greatly decrease'; Table 1's worst change is "
                                         "−1.36 points (Qwen), 3 points is about twice that"),
              {"mask": MASKS["utility"], "no_harm": True, **TABLE1_MODE, **FLOOR}, fmt(delta_avg(TABLE1, "utility")),
              {r: {"mask": MASKS[f"utility-{r}"]} for r in READINGS if r != PRIMARY}),
        *_corr_checks("C5d", "retrieval_utility_corr", task, "retrieval score", FIG3_RHO,
                      {"retrieval_threshold": RETRIEVAL_THRESHOLD}),
        *_corr_checks("C-Fig4", "wq_utility_corr", task, "W_q row L1", FIG4_RHO, {}),
        Check("C5e", f"first16-{task}", qa, "masked_accuracy_delta",
              "masked first eighth − original accuracy, points, avg over positions",
              Criterion("greater", -2.2, "the paper: a drop of 'less than 2.2 points' (§5.4)"),
              {"mask": MASKS["first16"], "no_harm": True, **TABLE2_MODE, **FLOOR}, fmt(delta_avg(TABLE2, "first16"))),
        Check("C5e", f"first32-{task}", qa, "masked_accuracy_delta",
              "masked first quarter − original accuracy, points, avg over positions",
              Criterion("greater", -2.2, "the paper: a drop of 'less than 2.2 points' (§5.4)"),
              {"mask": MASKS["first32"], "no_harm": True, **TABLE2_MODE, **FLOOR}, fmt(delta_avg(TABLE2, "first32"))),
        Check("C5f", f"last32-{task}", qa, "masked_accuracy_delta",
              "masked last quarter − original accuracy, points, avg over positions",
              Criterion("less", -5.0, "our choice: 'detrimental' is a drop of more than 5 points (the paper's "
                                      "drops are 20-58)"),
              {"mask": MASKS["last32"], "no_harm": False, **TABLE2_MODE, **FLOOR}, fmt(delta_avg(TABLE2, "last32"), 1)),
        Check("C5f", f"last16-{task}", qa, "masked_accuracy_delta",
              "masked last eighth − original accuracy, points, avg over positions",
              Criterion("less", -2.2, "our choice: 'also hurts' is a drop beyond C5e's 2.2 points (the "
                                      "paper's drops are 10-39)"),
              {"mask": MASKS["last16"], "no_harm": False, **TABLE2_MODE, **FLOOR}, fmt(delta_avg(TABLE2, "last16"), 1)),
        Check("C5f", f"last16-position-{task}", qa, "masked_position_retention",
              "retention (masked / original accuracy), last eighth masked: at the last gold position − at the first",
              Criterion("greater", 0.0, SIGN + ": hurts 'less so when the answer is in the 20th document'"),
              {"mask": MASKS["last16"], **TABLE2_MODE, **FLOOR}, fmt(position_retention(TABLE2, "last16"))),
    ]


def qa_plan() -> dict[str, list]:
    """Masking mode -> the query masks the QA checks measure in it (alternatives too), in
    the order of ``MASKS`` (``ropedim.qa.study.Study``'s plan)."""
    used = [{**c.args, **a} for c in CHECKS for a in ({}, *c.alternatives.values()) if "mask" in c.args]
    return {mode: [m for name, m in MASKS.items() if any(u["mask"].name == name and u["mode"] == mode for u in used)]
            for mode in ("faithful", "fast")}


# ---------------------------------------------------------------- beyond the paper (issue 14)
# The dose-response of the gold answer's log-probability with random-dims controls.
DOSE_FRACTIONS = (1 / 16, EIGHTH, QUARTER, 1 / 2)  # k = D/16 ... D/2 of a head of D dims
DOSE_DRAWS = 3  # seeded draws of the random pairs
DOSE_QUESTIONS = 15  # our choice: the first 15 questions (× 3 positions) keep the whole curve (21 masks) within
#                      CI's budget on a 2-core CPU; the record says how many questions each measure needs
_DOSE = {"fractions": DOSE_FRACTIONS, "headline": EIGHTH, "draws": DOSE_DRAWS, "questions": DOSE_QUESTIONS,
         "retrieval_threshold": RETRIEVAL_THRESHOLD, "all_heads_frontier": True, "accuracy": True, **TABLE2_MODE}
for task in TASKS:
    CHECKS += [
        Check("B-dose", f"first-vs-random-{task}", QA(task), "dose_response",
              "log p(gold), first eighth masked − an eighth of random pairs masked (mean of the draws), nats, "
              "avg over positions and questions",
              Criterion("greater", 0.0, "the claim's sign: the first dims cost less than any k dims (beyond the "
                                        "paper)"),
              {"contrast": "first-vs-random", **_DOSE}, "", beyond=True),
        Check("B-dose", f"random-vs-last-{task}", QA(task), "dose_response",
              "log p(gold), an eighth of random pairs masked (mean of the draws) − last eighth masked, nats, "
              "avg over positions and questions",
              Criterion("greater", 0.0, "the claim's sign: the last dims cost more than any k dims (beyond the "
                                        "paper)"),
              {"contrast": "random-vs-last", **_DOSE}, "", beyond=True),
    ]

# The critical dimension (Liu et al. 2023) on the toy: a grid of bases and maximum positions.
CRITICAL_GRID = tuple((b, t) for b in (500.0, 1e4, 1e6) for t in (256, 2048, 16384))
# A cell counts where its toy learnt the task: mean final training loss under half of chance (log n
# nats; our choice). The default toy does not learn b = 500, T = 16384 (4.7 of 5.3 nats: an untrained
# head's curve steps anywhere); the alternative counts every cell.
_CRITICAL = {"grid": CRITICAL_GRID, "n_seeds": 3, "init": "1", "trained_below": 0.5}
_CRITICAL_ALTS = {"every cell, untrained toys included": {"trained_below": None}}
CHECKS += [
    Check("B-critical", "slope", Toy(), "critical_dimension",
          "slope of the measured magnitude transition on d_c = 2⌈(d/2)·log_b(T/2π)⌉ over the grid (per seed)",
          Criterion("within", (0.5, 1.5), "our choice: 'tracks' is a slope within ±50% of 1; a transition that "
                                          "ignores b and T (the no-RoPE toy) has slope 0"),
          {**_CRITICAL, "statistic": "slope"}, "1 (Liu et al.'s prediction)", alternatives=_CRITICAL_ALTS,
          beyond=True),
    Check("B-critical", "mae", Toy(), "critical_dimension",
          "mean |measured transition − d_c| over the grid, as a share of the head's dims (per seed)",
          Criterion("less", 1 / 8, "our choice: within the paper's own resolution, its masks of 16 of 128 dims "
                                   "(one eighth of the head)"),
          {**_CRITICAL, "statistic": "mae"}, "0 (Liu et al.'s prediction)", alternatives=_CRITICAL_ALTS,
          beyond=True),
]
# Liu et al.'s T is the longest distance a layer sees in training: the context, or a sliding-window
# layer's window (Gemma 3's local layers: 512 of 32768). The alternative gives every layer the context.
_SPAN_ALTS = {"T = the context for every layer (sliding windows ignored)": {"span": "context"}}
# a model that rescales each query dim before RoPE (Gemma 3's q_norm): W_q × q_norm is what RoPE sees (as
# C5a-scaled); skipped on a model without one
_WQ_ALTS = {**_SPAN_ALTS, "W_q x q_norm (what RoPE sees; models with q_norm)": {"scaled": True}}
_LLM_DC = Criterion("within", (-1 / 8, 1 / 8), "our choice: within the paper's own resolution, its masks of 16 "
                                                "of 128 dims (one eighth of the head), as the toy's error; T is the "
                                                "model's configured context (max_position_embeddings)")
CHECKS += [
    Check("B-critical", "wq", Weights(), "critical_wq",
          "(where the W_q row-norm curve rises − d_c from the layers' θ and the model's context) / head dim",
          _LLM_DC, {"scaled": False}, "0 (Liu et al.'s prediction)", alternatives=_WQ_ALTS, beyond=True),
    *(Check("B-critical", f"utility-{task}", QA(task), "critical_utility",
            "(where the utility curve rises − d_c from the layers' θ and the model's context) / head dim",
            _LLM_DC, {"reading": PRIMARY}, "0 (Liu et al.'s prediction)", alternatives=_SPAN_ALTS, beyond=True)
      for task in TASKS),
]

# ---------------------------------------------------------------- beyond the paper, issue 19 (§3, §4)
# Frequency use in activations (Barbero et al.) and massive query values (Jin et al.): second
# witnesses for C5a and C5b on each model and task. Select them with `-k beyond` (every
# beyond-the-paper check) or `-k "B-act or B-massive"`.
LOCAL_THRESHOLD = 0.5  # our choice: "mostly on the same or the previous token" is more than half the mass
MIN_LOCAL_HEADS = 3  # our choice: fewer local heads than this cannot be contrasted with the others
MASSIVE_DRAWS = 2  # seeded random dims per head, averaged (each costs one pass over the questions)
MASSIVE_QUESTIONS = 10  # our choice, CI's budget: 10 questions x 3 positions x 4 passes (none, massive, 2 random)
NULL_TREND_PAIRS = NULL_TREND.replace("dims have no θ order", "pairs have no θ order").replace(
    "head size", "number of pairs")
for task in TASKS:
    qa = QA(task)
    CHECKS += [
        Check("B-act", task, qa, "act_pair_trend", f"{_TREND}, mean pre-RoPE query pair norm over tokens",
              Criterion("greater", NULL99, NULL_TREND_PAIRS), {"role": "query"},
              "most norm in the lowest frequencies (Barbero et al.)", beyond=True),
        Check("B-act", f"key-{task}", qa, "act_pair_trend", f"{_TREND}, mean key pair norm over tokens",
              Criterion("greater", NULL99, NULL_TREND_PAIRS), {"role": "key"},
              "most norm in the lowest frequencies (Barbero et al.)", beyond=True),
        Check("B-act", f"local-{task}", qa, "act_local_contrast",
              "query norm share of the highest-frequency eighth of pairs: local heads (attention mostly on the "
              "same or previous token) − the other heads",
              Criterion("greater", 0.0, "Barbero et al.: heads that attend to the diagonal or the previous token "
                                        "use the highest frequencies; 0 is no difference (a check of the reading)"),
              {"fraction": EIGHTH, "local_threshold": LOCAL_THRESHOLD, "min_heads": MIN_LOCAL_HEADS},
              "> 0 (local heads use the high frequencies)", beyond=True),
        Check("B-massive", task, qa, "massive_low_freq_share",
              "share of heads whose largest pre-RoPE query dim (mean |q| over tokens) lies in the lower-frequency "
              "half of the pairs",
              Criterion("greater", 0.5, "Jin et al.: massive values sit in the low frequencies; 0.5 is the share "
                                        "when the largest dim is as likely in either half (an untrained model)"),
              {}, "most heads (Jin et al.)", beyond=True),
        Check("B-massive", f"ablation-{task}", qa, "massive_ablation",
              "gold log-prob, massive dim replaced by its mean − a random dim of the same head replaced, nats, "
              "mean over questions (gold positions averaged)",
              Criterion("less", 0.0, "Jin et al.: replacing the massive dims hurts more than replacing others; "
                                     "0 is no difference"),
              {"draws": MASSIVE_DRAWS, "questions": MASSIVE_QUESTIONS}, "< 0 (the massive dim matters more)", beyond=True),
    ]

# ---------------------------------------------------------------- beyond the paper, issue 19 (§1)
# The precondition of C5e/C5f: masking the top 5% of heads by the paper's retrieval score costs
# more gold log-prob than masking as many random heads of the same layers. One check per
# head-masking form (not an `alternatives` entry: a form is not a reading of the paper's claim,
# the paper masks no whole heads; each form is its own measurement, with its own figure panel).
# Select them with `-k B-heads` (or `-k beyond`).
HEADS_FRACTION = 0.05  # the issue's largest k (5 % of heads: 14 of smollm2's 270)
HEADS_DRAWS = 5  # seeded random same-layer draws, averaged (each one pass over the questions)
HEADS_QUESTIONS = 10  # our choice, CI's budget: 10 questions x 3 positions x 6 passes per form
# the smaller k, shown beside the verdict (a verdict that differs between k is fragile)
HEADS_SMALLER = {f"{round(100 * f)}% of heads": {"fraction": f, "accuracy": False} for f in (0.01, 0.02)}
# the control's confound: a model with few heads per layer leaves the same-layer draw little to choose
# (gemma3: 4 heads per layer, a layer holding 2 top heads always gives the same other 2), so the random
# heads are also drawn from every layer; a verdict that differs between the controls is fragile
HEADS_ALTS = {**HEADS_SMALLER, "random heads of any layer": {"control": "any-layer", "accuracy": False}}
# (accuracy beside the log-prob at the primary only: 6 greedy answers per prompt and form, CI's budget)
for task in TASKS:
    CHECKS += [
        Check("B-heads", f"{form}-{task}", QA(task), "head_masking",
              f"log p(gold), top 5% heads by retrieval score masked ({form}) − as many random heads of the same "
              "layers masked (mean of 5 draws), nats, mean over questions (gold positions averaged)",
              Criterion("less", 0.0, "the paper's premise of §5.4: the retrieval heads are the ones long-distance "
                                     "retrieval needs (beyond the paper); 0 is no difference"),
              {"form": form, "fraction": HEADS_FRACTION, "draws": HEADS_DRAWS, "questions": HEADS_QUESTIONS},
              "< 0 (the retrieval heads matter more)", alternatives=HEADS_ALTS, beyond=True)
        for form in ("zero", "uniform")
    ]

# ---------------------------------------------------------------- beyond the paper, issue 19 (§2)
# Does C5e/C5f's verdict survive the ablation's form? The paper's form (zero, pairs, query) is the
# primary; the other forms are ``alternatives``: a verdict that differs between forms is fragile.
# Select them with `-k B-forms` (or `-k beyond`).
FORMS_QUESTIONS = 10  # our choice, CI's budget: 10 questions x 3 positions x 9 passes (none, 4 forms x 2 masks)
_FORMS = {"fraction": EIGHTH, "retrieval_threshold": RETRIEVAL_THRESHOLD, "questions": FORMS_QUESTIONS}
_FORM_ALTS = {f: {"form": f} for f in ("mean-pairs-query", "zero-storage-query", "zero-pairs-query-key")}
for task in TASKS:
    CHECKS += [
        Check("B-forms", f"first-vs-last-{task}", QA(task), "ablation_form",
              "log p(gold), first eighth of the retrieval heads' dims masked − last eighth masked, nats, mean over "
              "questions (gold positions averaged); the paper's form (zero, pairs, query)",
              Criterion("greater", 0.0, "the sign of C5e and C5f together: the first dims cost less than the last "
                                        "(beyond the paper: the form the paper does not vary)"),
              {"form": "zero-pairs-query", "contrast": "first-vs-last", **_FORMS}, "> 0 (Table 2's pattern)",
              alternatives=_FORM_ALTS, beyond=True),
        Check("B-forms", f"last-{task}", QA(task), "ablation_form",
              "log p(gold), last eighth of the retrieval heads' dims masked − unmasked, nats, mean over questions "
              "(gold positions averaged); the paper's form (zero, pairs, query)",
              Criterion("less", 0.0, "the sign of C5f: masking the last dims is detrimental (beyond the paper: the "
                                     "form the paper does not vary)"),
              {"form": "zero-pairs-query", "contrast": "last", **_FORMS}, "< 0 (Table 2's last16, last32)",
              alternatives=_FORM_ALTS, beyond=True),
    ]
