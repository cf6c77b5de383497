"""The one claims table. Claim tests, their ids, tolerances, expected outcomes and the
report are all generated from the records below; no test body carries a number.

A ``Check`` is one testable statement: a paper claim (``claim``) on one subject (the toy
with or without RoPE, or a model), a statistic computed by a named measure in
``ropedim.measures``, and a criterion on its interval. ``EXPECTED`` lists the checks that
are known not to hold on a subject, with the reason: they run as ``xfail(strict=True)``,
so a change in the finding fails the suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ropedim.verdict import Criterion


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    quote: str
    paper_value: str
    figure: str | None = None  # figure kind drawn by ropedim.figures for this claim
    decisions: tuple[str, ...] = ()  # what the paper leaves open and what we chose


@dataclass(frozen=True)
class Check:
    claim: str  # Claim.id
    variant: str  # what distinguishes checks of one claim: "rope", "first16", ...
    subject: str  # "toy" or "model"
    measure: str  # name in ropedim.measures.MEASURES
    statistic: str  # what the number is, for the report
    criterion: Criterion
    params: dict = field(default_factory=dict)  # passed to the measure
    paper_value: str = ""

    def test_id(self, model: str | None = None) -> str:
        parts = [self.claim, "toy" if self.subject == "toy" else model, self.variant]
        return "-".join(p for p in parts if p)


TOY_DECISIONS = (
    "Positions: each key at a uniform random position in [0, max_position); the query at "
    "max_position, after all keys (relative distances uniform in [1, max_position]).",
    "K, V: the target pair plus subset − 1 others drawn without replacement; P(v) over all n values.",
    "Attention softmax(q·k/√d); RoPE as LLaMA's (base 10000) on q and k; vectors start N(0, 1); "
    "Adam; the rope and no-rope heads of a seed share initialisation and data.",
)

CLAIMS = {c.id: c for c in [
    Claim("C4a", "§4, Fig. 1a",
          "It shows that the model trained with RoPE applied learns to assign lower weights to "
          "the first few dimensions of {q_i} and {k_i}. [...] In contrast, the models without "
          "RoPE do not exhibit these phenomena.",
          "plot: lower |q|, |k| in the first dims with RoPE; flat without", figure="fig1a",
          decisions=TOY_DECISIONS + (
              "Statistic: log(mean |q|,|k| over the last eighth of dims / over the first "
              "eighth), dims in θ order (16 of 128 as in §5); bootstrap over tuples, "
              "stratified by seed. The Spearman trend over θ rank is shown beside it.",)),
    Claim("C4b", "§4, Fig. 1b",
          "when RoPE is applied, removing the first few dimensions does not affect the loss "
          "significantly, while removing the last few dimensions greatly increases the loss. "
          "[...] In contrast, the models without RoPE do not exhibit these phenomena.",
          "plot: flat loss when the first dims go, steep when the last go; symmetric without RoPE",
          figure="fig1b",
          decisions=TOY_DECISIONS + (
              "Removing a dim sets it to 0 in q (hence its term of q·k) on a fixed evaluation "
              "set; 'a few dims' is a quarter of the head (32 of 128). 'Barely changes' is an "
              "increase below 0.1 nats; 'greatly increases' is an asymmetry above 1 nat; "
              "'no asymmetry' is a difference within ±0.25 nats.",)),
]}

# Fractions of a head are the paper's 16 of 128 dims scaled to the head size.
EIGHTH = 1 / 8
QUARTER = 1 / 4

CHECKS = [
    # C4a: log(mean |q|,|k| over the last eighth of dims / over the first eighth).
    Check("C4a", "rope", "toy", "toy_weight_ratio",
          "log ratio of mean |q|,|k|: last eighth / first eighth of dims",
          Criterion("greater", 0.18), {"setup": "rope", "fraction": EIGHTH},
          paper_value="> 0 (first dims lower)"),
    Check("C4a", "norope", "toy", "toy_weight_ratio",
          "log ratio of mean |q|,|k|: last eighth / first eighth of dims",
          Criterion("within", (-0.1, 0.1)), {"setup": "norope", "fraction": EIGHTH},
          paper_value="≈ 0 (no trend)"),
    # C4b: loss increase (nats) when a quarter of the dims is removed from q·k.
    Check("C4b", "rope-first", "toy", "toy_removal_delta",
          "loss increase (nats) with the first quarter of dims removed",
          Criterion("less", 0.1), {"setup": "rope", "which": "first", "fraction": QUARTER},
          paper_value="≈ 0 (barely changes)"),
    Check("C4b", "rope-asymmetry", "toy", "toy_removal_asymmetry",
          "loss(last quarter removed) − loss(first quarter removed), nats",
          Criterion("greater", 1.0), {"setup": "rope", "fraction": QUARTER},
          paper_value="large (last dims matter, first do not)"),
    Check("C4b", "norope", "toy", "toy_removal_asymmetry",
          "loss(last quarter removed) − loss(first quarter removed), nats",
          Criterion("within", (-0.25, 0.25)), {"setup": "norope", "fraction": QUARTER},
          paper_value="≈ 0 (no asymmetry)"),
]

# (check test id pattern, subject) -> reason: known findings, run as strict xfail.
EXPECTED: dict[tuple[str, str], str] = {}


def checks_for(subject: str) -> list[Check]:
    return [c for c in CHECKS if c.subject == subject]
