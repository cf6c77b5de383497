"""One model on one QA task, the §5 steps in the paper's order, each cached on its own:

1. QA set (§5.1, App. B): examples at every gold position, prompts, the length audit;
2. unmasked answers of the analysis questions, then head scores from captures of the
   model reading its prompt plus its own answer (§5.3 retrieval, Eq. 4 utility);
3. masks built from those scores (§5.2 Table 1: low utility; §5.4 Table 2: first/last
   dims of the retrieval heads);
4. answers under every mask in the run's mode (faithful: the mask at every position, the
   paper's; fast: from the question on, one prefill per context), and their correctness;
5. the fast-vs-faithful check of the masking mode: every question when the run is
   faithful (fast answers are cheap), the first ``n_mode_check`` when it is fast.

Masked answers need the scores, and the scores need the unmasked answers of the analysis
questions: the order above is the only one that works. Cache keys hold the model's
weights, the QA configuration, the masks' arguments and ``CODE_VERSION``, so
pytest-xdist workers and later runs share every step.
"""

from __future__ import annotations

from functools import cached_property
from typing import Mapping, Protocol, Sequence

import numpy as np
import torch

from .. import cache
from ..generation import mask_digest, model_fingerprint
from ..logprob import NONE, Intervention, fast_gold_logprob, gold_logprob
from ..utility import PRIMARY, READINGS
from .analysis import HeadScores, analysis_items, head_scores
from .answers import answer, answer_under, correctness
from .config import QAConfig
from .dataset import QASet, build_qaset
from .masks import QueryMask, Unmasked
from .mode_check import ModeAgreement, fast_vs_faithful

__all__ = ["QARun", "Study"]

CODE_VERSION = 4  # 4: Eq. 4 readings, Liu et al.'s first line, analysis set of questions × positions


class QARun(Protocol):
    """What the §5 measures read (``ropedim.measures``); a test double implements it."""

    loaded: object  # ropedim.models.Loaded
    cfg: QAConfig

    def head_scores(self, reading: str = PRIMARY) -> HeadScores: ...

    def correctness(self, mode: str, names: Sequence[str] | None = None) -> dict[str, np.ndarray]: ...
    # mask -> [positions, questions]; ``names`` default: the masks planned in ``mode``

    def mode_check(self) -> list[ModeAgreement]: ...

    # beyond the paper (only the checks that use them call these):
    def gold_logprob(self, interventions, questions: int | None = None) -> dict[str, np.ndarray]: ...
    # name -> [positions, questions] log p(gold answer | prompt), interventions at every position

    def gold_logprob_fast(self, masks, questions: int | None = None) -> dict[str, np.ndarray]: ...
    # the same for query masks from the question on

    def cached_correctness(self, mode: str) -> dict[str, np.ndarray] | None: ...  # correctness(mode) if on disk

    def correctness_of(self, masks, mode: str, questions: int | None = None) -> dict[str, np.ndarray]: ...
    # correctness under query masks given as tensors (name -> [L, H, Dh]), "none" included

    def correctness_under(self, interventions, questions: int | None = None) -> dict[str, np.ndarray]: ...
    # name -> 0/1 [positions, questions] answered under each Intervention at every position, "none" included

    def activation_stats(self): ...  # ropedim.activations.ActivationStats of the analysis prompts


class Study:
    """The cached §5 steps of one model (``loaded``) on one task. ``plan``: the masking
    mode -> the query masks the claims measure in it ("faithful": at every position;
    "fast": from the question on); a config mode other than "table" puts every mask in it."""

    def __init__(self, loaded, cfg: QAConfig, plan: Mapping[str, Sequence[QueryMask]]):
        self.loaded, self.cfg = loaded, cfg
        if cfg.mode != "table":
            plan = {cfg.mode: [m for ms in plan.values() for m in ms]}
        self.masks = {m.name: m for ms in plan.values() for m in [Unmasked(), *ms]}
        self.plan = {mode: ["none", *(m.name for m in ms)] for mode, ms in plan.items() if ms}
        self.fingerprint = model_fingerprint(loaded.model)
        self._scores: dict[str, HeadScores] = {}
        self._activations = None  # ropedim.activations.ActivationStats, once computed

    def mode_of(self, mode: str) -> str:
        """The mode a check asking for ``mode`` is measured in (the config may force one)."""
        return mode if self.cfg.mode == "table" else self.cfg.mode

    def _key(self, kind: str, **more) -> dict:
        return {"model": self.fingerprint, "qa": self.cfg.to_dict(), "code": CODE_VERSION, "kind": kind, **more}

    def _masks_spec(self, names) -> list[dict]:
        return [self.masks[n].spec() for n in names]

    # 1. the QA set
    @cached_property
    def qaset(self) -> QASet:
        return build_qaset(self.cfg, self.loaded)

    # 2. head scores, from the unmasked answers of the analysis questions
    def head_scores(self, reading: str = PRIMARY) -> HeadScores:
        """Retrieval and utility scores, Eq. 4 under ``reading`` (ropedim.utility.READINGS)."""
        if reading not in self._scores:
            r = READINGS[reading]

            def compute():
                qs, items = self.qaset, analysis_items(self.qaset, self.cfg.n_analysis)
                n = min(self.cfg.n_analysis, len(qs.audit.kept))  # the rest come with step 4
                none = answer(self.loaded, qs, {"none": None}, "fast", questions=n)["none"]  # both modes agree
                return head_scores(self.loaded, qs, items, none, self.cfg.utility, r)
            self._scores[reading] = cache.cached("scores", self._key("scores", reading=r.__dict__), compute)
        return self._scores[reading]

    # 3. masks
    def mask_tensor(self, name: str):
        m = self.masks[name]
        return m.build(self.loaded.anatomy, self.head_scores(m.reading) if m.needs_scores else None)

    # 4. answers under every mask, and their correctness
    def answers(self, names: Sequence[str], mode: str, questions: int | None = None):
        return answer(self.loaded, self.qaset, {n: self.mask_tensor(n) for n in names}, mode, questions)

    def correctness(self, mode: str, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Correctness under the masks (``names``; default: those planned in ``mode``, and
        the unmasked run) in ``mode``, computed once: one sweep whose batches the xdist
        workers split."""
        names = list(dict.fromkeys(["none", *(names if names is not None else self.plan.get(mode, []))]))
        key = self._key("correct", mode=mode, masks=self._masks_spec(names))
        return cache.cached("correct", key, lambda: correctness(self.answers(names, mode), self.qaset),
                            unlocked=lambda: self.answers(names, mode))

    # 5. the masking mode, checked
    def mode_check(self) -> list[ModeAgreement]:
        """Faithful − fast per mask: the fast-mode masks on the first ``n_mode_check``
        questions (faithful answers are the cost), the faithful-mode ones on every question
        (fast answers are cheap)."""
        out = []
        for mode, n in (("fast", self.cfg.n_mode_check), ("faithful", None)):
            names = [v for v in self.plan.get(mode, []) if v != "none"]
            if not names or n == 0:
                continue
            other = "faithful" if mode == "fast" else "fast"
            key = self._key("mode_check", masks=self._masks_spec(names), questions=n)
            compute = lambda names=names, n=n: fast_vs_faithful(
                self.loaded, self.qaset, {v: self.mask_tensor(v) for v in names}, n)
            out += cache.cached("mode_check", key, compute,
                                unlocked=lambda names=names, n=n, other=other: self.answers(names, other, n))
        return out

    # beyond the paper: the gold answer's teacher-forced log-probability, activation statistics
    def _n_questions(self, questions: int | None) -> int:
        """The first ``questions`` kept questions (all: None), as a count."""
        kept = len(self.qaset.audit.kept)
        return kept if questions is None else min(questions, kept)

    def logprob_inputs(self, questions: int | None = None) -> tuple[int, list, list[str]]:
        """(n, prompts, first gold answers) of the first ``questions`` kept questions (all by
        default) at every gold position, position by position."""
        qs, n = self.qaset, self._n_questions(questions)
        prompts = [p for pos in qs.positions for p in qs.kept_prompts(pos)[:n]]
        golds = [g[0] for pos in qs.positions for g in qs.golds(pos)[:n]]
        return n, prompts, golds

    def gold_logprob(self, interventions: Sequence[Intervention], questions: int | None = None
                     ) -> dict[str, np.ndarray]:
        """{name: [positions, questions] log p(gold answer | prompt)} under each intervention
        (at every position) and unmasked ("none", always included), on the first
        ``questions`` kept questions (all by default). Each intervention is cached on its
        own, keyed by its spec, so checks that share one compute it once."""
        n, prompts, golds = self.logprob_inputs(questions)
        out = {}
        for iv in ([NONE] + [iv for iv in interventions if iv.name != "none"]):
            key = self._key("logprob", intervention=iv.spec, questions=n)
            got = cache.cached("logprob", key, lambda iv=iv: gold_logprob(
                self.loaded, prompts, golds, [iv], self.cfg.batch_size, desc=f"gold log-prob ({iv.name})")[iv.name])
            out[iv.name] = np.asarray(got).reshape(len(self.qaset.positions), n)
        return out

    def gold_logprob_fast(self, masks: Mapping[str, object], questions: int | None = None) -> dict[str, np.ndarray]:
        """As :meth:`gold_logprob` for query masks applied from the question on (fast mode:
        the context prefilled once, unmasked, shared by every mask), all masks in one cached step."""
        n, prompts, golds = self.logprob_inputs(questions)
        variants = {"none": None, **masks}
        key = self._key("logprob-fast", questions=n, masks={name: mask_digest(m) for name, m in variants.items()})
        got = cache.cached("logprob", key, lambda: {k: v.tolist() for k, v in fast_gold_logprob(
            self.loaded, prompts, golds, variants, max(1, self.cfg.batch_size // 3)).items()})
        return {name: np.asarray(v).reshape(len(self.qaset.positions), n) for name, v in got.items()}

    def correctness_of(self, masks: Mapping[str, object], mode: str, questions: int | None = None
                       ) -> dict[str, np.ndarray]:
        """{name: 0/1 [positions, questions]} under query masks given as tensors (not the
        plan's named masks: the dose-response's curve), and unmasked ("none"), answered in
        ``mode`` on the first ``questions`` kept questions; one cached step keyed by the
        masks' digests (the answers themselves are cached per prompt and mask, so workers
        split them)."""
        n = self._n_questions(questions)
        variants = {"none": None, **masks}
        key = self._key("correct-masks", mode=mode, questions=n,
                        masks={name: mask_digest(m) for name, m in variants.items()})
        got = cache.cached("correct", key, lambda: {k: v.tolist() for k, v in correctness(
            answer(self.loaded, self.qaset, variants, mode, n), self.qaset).items()},
            unlocked=lambda: answer(self.loaded, self.qaset, variants, mode, n))
        return {name: np.asarray(v, float) for name, v in got.items()}

    def correctness_under(self, interventions: Sequence[Intervention], questions: int | None = None
                          ) -> dict[str, np.ndarray]:
        """{name: 0/1 [positions, questions]} answered under each intervention (any hook, at
        every position: faithful) and unmasked ("none", always included), on the first
        ``questions`` kept questions: the accuracy beside :meth:`gold_logprob`'s log-prob for
        the same interventions and questions. Answers are cached per prompt and intervention
        (keyed by its spec), so workers split them and checks that share one answer it once."""
        n = self._n_questions(questions)
        return {iv.name: correctness({iv.name: answer_under(self.loaded, self.qaset, iv, n)}, self.qaset)[iv.name]
                .astype(float) for iv in [NONE, *(iv for iv in interventions if iv.name != "none")]}

    def cached_correctness(self, mode: str) -> dict[str, np.ndarray] | None:
        """The correctness of the masks planned in ``mode`` where it is already on disk, else
        None (never answers: a measure that only reuses it must not cost a sweep)."""
        names = list(dict.fromkeys(["none", *self.plan.get(mode, [])]))
        return cache.load("correct", self._key("correct", mode=mode, masks=self._masks_spec(names)), None)

    def activation_stats(self):
        """Per-pair q and k norms, per-dim |q| and mean, local attention mass
        (``ropedim.activations``) over the analysis examples' prompts, cached on disk."""
        if self._activations is None:
            from ..activations import CODE_VERSION as ACT_CODE, compute_activation_stats
            items = analysis_items(self.qaset, self.cfg.n_analysis)
            key = self._key("activations", activations_code=ACT_CODE, items=[list(i) for i in items])
            self._activations = cache.cached("activations", key, lambda: compute_activation_stats(
                self.loaded, [self.qaset.prompts[p][i] for p, i in items]))
        return self._activations

    def describe(self) -> dict:
        """The run's configuration, for every record of this model and task."""
        a, cfg = self.qaset.audit, self.cfg
        return {**{k: v for k, v in cfg.to_dict().items() if k != "utility"}, "utility": cfg.to_dict()["utility"],
                "positions_1based": [p + 1 for p in cfg.positions], "data": self.qaset.data,
                "prompt_style": self.loaded.prompt_style, "n_kept": len(a.kept),
                "skipped_too_long": list(a.skipped_too_long), "max_len": a.max_len, "tokens_min": a.tokens_min,
                "tokens_mean": a.tokens_mean, "tokens_max": a.tokens_max}
