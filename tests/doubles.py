"""Pieces shared by the tests' QA-run doubles (no tests here)."""

from __future__ import annotations

import numpy as np


def planted_correctness(interventions, cost_of, scale: float, asked: list, questions=None) -> dict:
    """{name: 0/1 [3 positions, questions]}: 60 % right unmasked; under each intervention a
    right answer is lost with probability min(1, cost_of(iv) / ``scale``). Appends each
    intervention's name to ``asked``."""
    rng = np.random.default_rng(2)
    n = questions or 30
    base = (rng.uniform(size=(3, n)) < 0.6).astype(float)
    out = {"none": base}
    for iv in interventions:
        asked.append(iv.name)
        out[iv.name] = base * (rng.uniform(size=(3, n)) >= min(1.0, cost_of(iv) / scale))
    return out
