"""Known findings: where a check's measured verdict is not "supported", written down as
data. Key: (check key, model alias, profile); value: the expected outcome and why.

A claim test asserts that the measured verdict equals the expected one (``supported``
when no finding is listed), in either direction: a finding that changes, from
"inconclusive" to "not supported" as much as to "supported", fails the suite. No numbers
here: the report prints the measured interval beside the why. A finding of the
``default`` profile holds under every profile unless an entry of that profile replaces it
(a ``paper`` entry: the check was measured at the paper's size).
"""

from __future__ import annotations

from dataclasses import dataclass

from ropedim.verdict import INCONCLUSIVE, NOT_SUPPORTED, OUTCOMES, SUPPORTED

__all__ = ["Finding", "FINDINGS", "expected"]


@dataclass(frozen=True)
class Finding:
    outcome: str | tuple[str, ...]  # one verdict, or the verdicts the why allows
    why: str

    @property
    def outcomes(self) -> tuple[str, ...]:
        return self.outcome if isinstance(self.outcome, tuple) else (self.outcome,)

    def to_json(self) -> dict:
        return {"outcomes": list(self.outcomes), "why": self.why}


THE_CLAIM = Finding(SUPPORTED, "the paper's claim")
NS, INC = NOT_SUPPORTED, INCONCLUSIVE

_GEMMA3_WQ = ("Gemma 3 270M shows no W_q row-norm trend over θ rank, raw or scaled by its q_norm: a finding "
              "beyond the paper's three 7-8B models")
_SMOL_FIG4 = "in SmolLM2 the W_q row norm of a dim group and its utility do not correlate as in the paper"
_SMOL_C5B = "the utility trend over θ rank is weak in SmolLM2 (64-dim heads, 8 analysis examples)"
_SMOL_C5C = "masking u < 0.5 removes about half of SmolLM2's query dims (every head); answers collapse"
_SMOL_C5D = "in SmolLM2 the utility of the last dims is negatively correlated with the retrieval score"
_SMOL_C5E = ("about a third of SmolLM2's heads score above 0.5; with 30 / 24 questions the paired interval "
             "cannot rule out a drop of 2.2 points")
_SMOL_POS = "masking the last dims hurts SmolLM2 most when the gold is last, the opposite of the paper's models"
_GEMMA_C5B = ("Gemma 3 270M's utility rises with θ rank, but with 8 examples of 4 query heads × 18 layers "
              "the interval straddles the bar")
_GEMMA_C5E = "with 30 / 24 questions the paired interval cannot rule out a drop of 2.2 points"
_SMOL_PAPER = "at the paper's size (100 examples, 20 documents)"
_GEMMA_PAPER = "at the paper's size (100 examples, 20 documents; 72 heads)"

FINDINGS: dict[tuple[str, str, str], Finding] = {
    # Gemma 3 270M, W_q row norms (every profile)
    **{(k, "gemma3", "default"): Finding(INC, _GEMMA3_WQ) for k in ("C5a", "C5a-heads", "C5a-scaled")},
    # SmolLM2-135M-Instruct, default profile
    ("C-Fig4-first16-nq", "smollm2", "default"): Finding(NS, _SMOL_FIG4),
    ("C-Fig4-first16-synthetic", "smollm2", "default"): Finding(NS, _SMOL_FIG4),
    ("C-Fig4-last16-nq", "smollm2", "default"): Finding(INC, _SMOL_FIG4),
    ("C-Fig4-last16-synthetic", "smollm2", "default"): Finding(INC, _SMOL_FIG4),
    ("C5b-heads-nq", "smollm2", "default"): Finding(INC, _SMOL_C5B),
    ("C5b-heads-synthetic", "smollm2", "default"): Finding(INC, _SMOL_C5B),
    ("C5b-nq", "smollm2", "default"): Finding(INC, _SMOL_C5B),
    ("C5c-nq", "smollm2", "default"): Finding(NS, _SMOL_C5C),
    ("C5c-synthetic", "smollm2", "default"): Finding(NS, _SMOL_C5C),
    ("C5d-last16-nq", "smollm2", "default"): Finding(NS, _SMOL_C5D),
    ("C5d-last16-synthetic", "smollm2", "default"): Finding(NS, _SMOL_C5D),
    **{(f"C5e-{m}-{t}", "smollm2", "default"): Finding(INC, _SMOL_C5E)
       for m in ("first16", "first32") for t in ("nq", "synthetic")},
    ("C5f-last16-nq", "smollm2", "default"): Finding(INC, "with 24 NQ questions at 17-42% accuracy the interval "
                                                          "reaches above the bound"),
    ("C5f-last16-position-nq", "smollm2", "default"): Finding(NS, _SMOL_POS),
    ("C5f-last16-position-synthetic", "smollm2", "default"): Finding(NS, _SMOL_POS),
    # Gemma 3 270M (base), default profile
    ("C-Fig4-last16-nq", "gemma3", "default"): Finding(INC, "in Gemma 3 270M the last dims' W_q row norm and "
                                                           "utility show no decidable correlation"),
    **{(f"C5b-{v}", "gemma3", "default"): Finding(INC, _GEMMA_C5B)
       for v in ("heads-nq", "heads-synthetic", "nq", "synthetic")},
    ("C5c-nq", "gemma3", "default"): Finding(INC, "NQ accuracy is about 18% here, too low to bound the drop"),
    ("C5c-synthetic", "gemma3", "default"): Finding(NS, "masking u < 0.5 removes about a third of Gemma 3 270M's "
                                                        "query dims (every head); accuracy drops"),
    **{(f"C5e-{m}-{t}", "gemma3", "default"): Finding(INC, _GEMMA_C5E)
       for m in ("first16", "first32") for t in ("nq", "synthetic")},
    ("C5f-last16-position-nq", "gemma3", "default"): Finding(INC, "with 24 NQ questions at 12-25% accuracy the "
                                                                 "position gap cannot be decided"),
    # Qwen: the paper itself reports ρ = +0.10 (§5.3: "except for Qwen")
    **{(f"C5d-first16-{t}", "qwen", "default"): Finding((NS, INC), "the paper's own exception: ρ = +0.10 for "
                                                                  "Qwen (§5.3, 'except for Qwen')")
       for t in ("nq", "synthetic")},
    # At the paper's size (--profile paper): smollm2 and gemma3 on NQ, Eq. 4 and the
    # retrieval scores on 100 analysis examples of 20 documents (reports/paper/)
    ("C-Fig4-first16-nq", "smollm2", "paper"): Finding(NS, f"{_SMOL_PAPER} the first dims' W_q row norm and "
                                                           "utility correlate positively"),
    ("C-Fig4-last16-nq", "smollm2", "paper"): Finding(NS, f"{_SMOL_PAPER} the last dims' W_q row norm and "
                                                          "utility correlate negatively"),
    ("C5b-nq", "smollm2", "paper"): Finding(INC, f"the utility trend over θ rank stays weak {_SMOL_PAPER}"),
    ("C5b-heads-nq", "smollm2", "paper"): Finding(INC, f"the utility trend over θ rank stays weak {_SMOL_PAPER}"),
    ("C5d-last16-nq", "smollm2", "paper"): Finding(NS, f"{_SMOL_PAPER} the utility of the last dims is "
                                                       "negatively correlated with the retrieval score"),
    ("C-Fig4-last16-nq", "gemma3", "paper"): Finding(SUPPORTED, f"holds {_GEMMA_PAPER}"),
    ("C5b-nq", "gemma3", "paper"): Finding(INC, f"the utility rises with θ rank, but the interval straddles "
                                                f"the bar {_GEMMA_PAPER}"),
    ("C5b-heads-nq", "gemma3", "paper"): Finding(INC, f"the utility rises with θ rank, but the interval "
                                                      f"straddles the bar {_GEMMA_PAPER}"),
    ("C5d-first16-nq", "gemma3", "paper"): Finding(INC, f"negative as in the paper, but the interval reaches 0 "
                                                        f"{_GEMMA_PAPER}"),
}


def expected(check_key: str, model: str, profile: str) -> Finding:
    """The outcome a check must give on ``model`` under ``profile``: the profile's own
    finding, else the default profile's, else the paper's claim."""
    return FINDINGS.get((check_key, model, profile)) or FINDINGS.get((check_key, model, "default"), THE_CLAIM)


def validate(check_keys, models, profiles) -> None:
    """Every finding names a real check, model and profile, with valid outcomes."""
    for (check, model, profile), f in FINDINGS.items():
        for what, value, known in (("check", check, check_keys), ("model", model, models),
                                   ("profile", profile, profiles)):
            if value not in known:
                raise KeyError(f"known finding {(check, model, profile)}: unknown {what} {value!r}; "
                               f"known: {', '.join(sorted(known))}")
        if not set(f.outcomes) <= set(OUTCOMES):
            raise ValueError(f"known finding {(check, model, profile)}: outcomes {f.outcomes} not in {OUTCOMES}")
