"""The checks: each testable statement of a claim on one subject, with its statistic (a
named measure of ``ropedim.measures`` and its arguments) and its criterion, whose source
says where the tolerance comes from. Claim tests are generated from this list by the
subject type (``claims/test_claims.py``), so a check added here is collected as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ropedim.qa.masks import LowUtility, RetrievalHeadDims
from ropedim.verdict import Criterion

from .paper import FIG3_RHO, FIG4_RHO, TABLE1, TABLE2, delta_avg, fmt, fmt_rho, position_gap


# ---------------------------------------------------------------- subjects

@dataclass(frozen=True)
class Toy:
    """§4's controlled experiment, trained with (``rope``) or without RoPE (``norope``)."""
    setup: str


@dataclass(frozen=True)
class Weights:
    """A model's weights (every ``--model``)."""


@dataclass(frozen=True)
class QA:
    """A model answering a multi-document QA task (every ``--model``)."""
    task: str


SUBJECTS = (Toy, Weights, QA)


@dataclass(frozen=True)
class Check:
    claim: str  # paper.CLAIMS id
    variant: str  # what distinguishes checks of one claim: "rope", "first16-nq", ...
    subject: Toy | Weights | QA
    measure: str  # name in ropedim.measures.MEASURES
    statistic: str  # what the number is, for the report
    criterion: Criterion
    args: dict = field(default_factory=dict, hash=False)  # keyword arguments of the measure
    paper_value: str = ""  # the paper's number for this statistic

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
TREND_BAR = ("null of the random-init control: an untrained model of the same shape gives a mean "
             "Spearman of 0 ± 0.03 (tests/test_weights.py); 0.1 is a trend, not noise")
MAJORITY = "our choice: a clear majority of heads; chance is 0.5"
MIN_ACCURACY = 10.0  # %, our choice: below this original accuracy an accuracy claim is inconclusive
RETRIEVAL_THRESHOLD = 0.5  # §5.4: "retrieval heads (score > 0.5)"
UTILITY_THRESHOLD = 0.5  # §5.2, Table 1: "utility scores lower than 0.5"

# The query masks of §5.2 and §5.4 (the fast sweep answers them in this order).
MASKS = {m.name: m for m in [
    LowUtility("utility", UTILITY_THRESHOLD),
    RetrievalHeadDims("first16", "first", EIGHTH, RETRIEVAL_THRESHOLD),
    RetrievalHeadDims("first32", "first", QUARTER, RETRIEVAL_THRESHOLD),
    RetrievalHeadDims("last16", "last", EIGHTH, RETRIEVAL_THRESHOLD),
    RetrievalHeadDims("last32", "last", QUARTER, RETRIEVAL_THRESHOLD),
]}

# ---------------------------------------------------------------- §4, the toy

_RATIO = "log ratio of mean |q|,|k|: last eighth / first eighth of dims"
_ASYM = "loss(last quarter removed) − loss(first quarter removed), nats"
CHECKS = [
    Check("C4a", "rope", Toy("rope"), "toy_weight_ratio", _RATIO,
          Criterion("greater", 0.18, "our choice: the last eighth at least 1.2× the first (log 1.2 = 0.18), "
                                     "a gap visible in Fig. 1a"),
          {"fraction": EIGHTH}, "> 0 (first dims lower)"),
    Check("C4a", "norope", Toy("norope"), "toy_weight_ratio", _RATIO,
          Criterion("within", (-0.1, 0.1), "our choice: no trend is a ratio within ±10%"),
          {"fraction": EIGHTH}, "≈ 0 (no trend)"),
    Check("C4b", "rope-first", Toy("rope"), "toy_removal_delta",
          "loss increase (nats) with the first quarter of dims removed",
          Criterion("less", 0.1, "our choice: 'does not affect the loss significantly' is under 0.1 nats"),
          {"which": "first", "fraction": QUARTER}, "≈ 0 (barely changes)"),
    Check("C4b", "rope-asymmetry", Toy("rope"), "toy_removal_asymmetry", _ASYM,
          Criterion("greater", 1.0, "our choice: 'greatly increases' is an asymmetry above 1 nat"),
          {"fraction": QUARTER}, "large (last dims matter, first do not)"),
    Check("C4b", "norope", Toy("norope"), "toy_removal_asymmetry", _ASYM,
          Criterion("within", (-0.25, 0.25), "our choice: 'no asymmetry' is a difference within ±0.25 nats"),
          {"fraction": QUARTER}, "≈ 0 (no asymmetry)"),
]

# ---------------------------------------------------------------- §5, W_q row norms (C5a)

CHECKS += [
    Check("C5a", "", Weights(), "wq_trend", "mean over heads of Spearman(θ rank, W_q row L1 norm)",
          Criterion("greater", 0.1, TREND_BAR), {"scaled": False, "statistic": "mean"},
          "increasing (all three LLMs, Fig. 2a)"),
    Check("C5a", "heads", Weights(), "wq_trend", "share of heads with Spearman(θ rank, W_q row L1) > 0",
          Criterion("greater", 0.6, MAJORITY), {"scaled": False, "statistic": "share"},
          "increasing (all three LLMs, Fig. 2a)"),
    Check("C5a", "scaled", Weights(), "wq_trend", "as C5a, rows scaled by |q_norm weight| (q/k-norm models only)",
          Criterion("greater", 0.1, TREND_BAR), {"scaled": True, "statistic": "mean"},
          "increasing (all three LLMs, Fig. 2a)"),
]

# ---------------------------------------------------------------- §5.2-5.4, on every task

TASKS = ("synthetic", "nq")
for task in TASKS:
    qa = QA(task)
    floor = {"min_accuracy": MIN_ACCURACY}

    CHECKS += [
        Check("C5b", task, qa, "utility_trend", "mean over heads of Spearman(θ rank, utility u)",
              Criterion("greater", 0.1, TREND_BAR), {"statistic": "mean"}, "increasing (Fig. 2b)"),
        Check("C5b", f"heads-{task}", qa, "utility_trend", "share of heads with Spearman(θ rank, u) > 0",
              Criterion("greater", 0.6, MAJORITY), {"statistic": "share"}, "increasing (Fig. 2b)"),
        Check("C5c", task, qa, "masked_accuracy_delta",
              "masked (u < 0.5) − original accuracy, points, avg over positions",
              Criterion("greater", -3.0, "the paper: 'does not greatly decrease'; Table 1's worst change is "
                                         "−1.36 points (Qwen), 3 points is about twice that"),
              {"mask": MASKS["utility"], **floor}, fmt(delta_avg(TABLE1, "utility"))),
        Check("C5d", f"first16-{task}", qa, "retrieval_utility_corr",
              "Pearson ρ(retrieval score, mean u of the first eighth of dims) over heads",
              Criterion("less", 0.0, SIGN + " (negative; Qwen the paper's exception)"),
              {"which": "first", "fraction": EIGHTH, "retrieval_threshold": RETRIEVAL_THRESHOLD},
              fmt_rho(FIG3_RHO, 0)),
        Check("C5d", f"last16-{task}", qa, "retrieval_utility_corr",
              "Pearson ρ(retrieval score, mean u of the last eighth of dims) over heads",
              Criterion("greater", 0.0, SIGN + " (positive)"),
              {"which": "last", "fraction": EIGHTH, "retrieval_threshold": RETRIEVAL_THRESHOLD},
              fmt_rho(FIG3_RHO, 1)),
        Check("C-Fig4", f"first16-{task}", qa, "wq_utility_corr",
              "Pearson ρ(W_q row L1, u), first eighth of dims, over heads",
              Criterion("less", 0.0, SIGN + " (negative)"), {"which": "first", "fraction": EIGHTH},
              fmt_rho(FIG4_RHO, 0)),
        Check("C-Fig4", f"last16-{task}", qa, "wq_utility_corr",
              "Pearson ρ(W_q row L1, u), last eighth of dims, over heads",
              Criterion("greater", 0.0, SIGN + " (positive)"), {"which": "last", "fraction": EIGHTH},
              fmt_rho(FIG4_RHO, 1)),
        Check("C5e", f"first16-{task}", qa, "masked_accuracy_delta",
              "masked first eighth − original accuracy, points, avg over positions",
              Criterion("greater", -2.2, "the paper: a drop of 'less than 2.2 points' (§5.4)"),
              {"mask": MASKS["first16"], **floor}, fmt(delta_avg(TABLE2, "first16"))),
        Check("C5e", f"first32-{task}", qa, "masked_accuracy_delta",
              "masked first quarter − original accuracy, points, avg over positions",
              Criterion("greater", -2.2, "the paper: a drop of 'less than 2.2 points' (§5.4)"),
              {"mask": MASKS["first32"], **floor}, fmt(delta_avg(TABLE2, "first32"))),
        Check("C5f", f"last32-{task}", qa, "masked_accuracy_delta",
              "masked last quarter − original accuracy, points, avg over positions",
              Criterion("less", -5.0, "our choice: 'detrimental' is a drop of more than 5 points (the paper's "
                                      "drops are 20-58)"),
              {"mask": MASKS["last32"], **floor}, fmt(delta_avg(TABLE2, "last32"), 1)),
        Check("C5f", f"last16-{task}", qa, "masked_accuracy_delta",
              "masked last eighth − original accuracy, points, avg over positions",
              Criterion("less", -2.2, "our choice: 'also hurts' is a drop beyond C5e's 2.2 points (the "
                                      "paper's drops are 10-39)"),
              {"mask": MASKS["last16"], **floor}, fmt(delta_avg(TABLE2, "last16"), 1)),
        Check("C5f", f"last16-position-{task}", qa, "masked_position_gap",
              "Δ accuracy (last eighth masked) at the last gold position − at the first",
              Criterion("greater", 0.0, SIGN + ": hurts 'less so when the answer is in the 20th document'"),
              {"mask": MASKS["last16"], **floor}, fmt(position_gap(TABLE2, "last16"), 1)),
    ]


def qa_masks() -> list:
    """The query masks the QA checks use, in the order of ``MASKS``."""
    used = {c.args["mask"].name for c in CHECKS if "mask" in c.args}
    return [m for name, m in MASKS.items() if name in used]
