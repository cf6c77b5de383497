"""Named run profiles: how big each experiment is.

``default`` is sized for CI on a 2-core CPU and still shows every effect the paper
reports; ``paper`` is the paper's configuration (App. A for the toy, 2655 questions and
20 documents for the QA claims).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .qa.config import QAConfig
from .toy import PAPER, ToyConfig


@dataclass(frozen=True)
class Profile:
    name: str
    toy: ToyConfig
    toy_seeds: tuple[int, ...]
    qa: dict = field(default_factory=dict)  # task -> QAConfig fields
    toy_inits: tuple[str, ...] = ("1",)  # initialisations trained: "1" N(0, 1), "1/d" N(0, 1/d)
    qa_models: dict = field(default_factory=dict)  # model alias -> task -> QAConfig fields that replace ``qa``'s

    def toy_configs(self) -> dict[str, ToyConfig]:
        """The toy configuration of each initialisation."""
        std = {"1": 1.0, "1/d": self.toy.dim ** -0.5}
        return {i: replace(self.toy, init_std=std[i]) for i in self.toy_inits}

    def qa_config(self, task: str, data: str | None = None, model: str | None = None) -> QAConfig:
        """The QA configuration of ``task`` (for ``model``, where the profile sizes it apart);
        ``data`` (--qa-data, comma-separated files) replaces the contexts built for the NQ task."""
        fields = {**self.qa.get(task, {}), **self.qa_models.get(model, {}).get(task, {})}
        if data and task == "nq":
            fields["data"] = tuple(p for p in data.split(",") if p)
        return QAConfig(task=task, **fields)


PROFILES = {
    "default": Profile(
        "default",
        ToyConfig(n=200, dim=64, subset=32, lr=1e-2, epochs=8, eval_samples=1024),
        toy_seeds=(0, 1, 2, 3, 4),
        qa={"synthetic": dict(n=30, k=5, n_analysis=12, batch_size=12),
            "nq": dict(n=24, k=5, n_analysis=12, batch_size=12)},
        # qwen2.5-1.5b on 2 CPU cores: prefills cost 17× SmolLM2's, so the size above is projected at
        # ~6 h (benchmarks/bench_qa_stages.py); the largest that the projection fits in an hour:
        qa_models={"qwen2.5-1.5b": {"synthetic": dict(n=4, n_analysis=3, n_mode_check=4)}},
    ),
    # for the project's own tests of the plugin: seconds, too small to show anything
    "smoke": Profile("smoke", ToyConfig(n=40, dim=16, subset=8, max_position=64, lr=1e-2, epochs=2,
                                        samples_per_epoch=512, eval_samples=64,
                                        removal_step=2), toy_seeds=(0, 1)),
    "paper": Profile("paper", PAPER, toy_seeds=(0, 1, 2, 3, 4), toy_inits=("1", "1/d"),
                     qa={"synthetic": dict(n=500, k=20, mode="faithful", n_analysis=100, n_mode_check=50, beyond_full=True),
                         "nq": dict(n=2655, k=20, mode="faithful", n_analysis=100, n_mode_check=50,
                                    beyond_full=True)}),
    # the paper's size with fast masking where the mode check (150 questions) agrees, else faithful
    "paper-fast": Profile("paper-fast", PAPER, toy_seeds=(0, 1, 2, 3, 4), toy_inits=("1", "1/d"),
                          qa={"synthetic": dict(n=500, k=20, mode="table", fallback="faithful", n_analysis=100,
                                                n_mode_check=150, beyond_full=True),
                              "nq": dict(n=2655, k=20, mode="table", fallback="faithful", n_analysis=100,
                                         n_mode_check=150, beyond_full=True)}),
}


def get(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return PROFILES[name]
