"""§5 end to end: one model on one multi-document QA task.

Examples (§5.1) → prompts (App. B) → greedy answers → captured q, K, V on prompt + own
answer → retrieval scores (§5.3) and utility scores (Eq. 4) → masked answers (§5.2 Table 1,
§5.4 Table 2). Each expensive step is cached on disk (``ropedim.cache``), keyed by the
model's weights, the QA configuration and the code version, so pytest-xdist workers and
later runs share it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np
import torch
from tqdm.auto import tqdm

from . import cache, generation, hooks, prompts as P, qa_data
from .metrics import best_subspan_em, first_line
from .rope import dims_in_fraction
from .retrieval import average_scores, retrieval_heads, retrieval_scores
from .utility import UtilityConfig, prepare as prepare_utility, utility_scores

CODE_VERSION = 2  # 2: fixed batches over all prompts, one sweep with the unmasked rows
TASKS = ("synthetic", "nq")
MASK_VARIANTS = {"first16": ("first", 1 / 8), "first32": ("first", 1 / 4),
                 "last16": ("last", 1 / 8), "last32": ("last", 1 / 4)}


@dataclass(frozen=True)
class QAConfig:
    task: str = "synthetic"  # "synthetic" | "nq"
    n: int = 30  # questions (the same ones at every gold position)
    k: int = 10  # documents per context
    distractors: str = "bm25"  # NQ contexts built from the oracle file: "bm25" | "random"
    max_new_tokens: int = 24
    mode: str = "fast"  # masked runs: "fast" (from the question on) | "faithful"
    batch_size: int = 4
    n_analysis: int = 12  # examples whose q, K, V feed retrieval and utility scores
    n_mode_check: int = 4  # questions (at every position) also answered in the other mode
    data: tuple[str, ...] = ()  # lost-in-the-middle files to read instead of building contexts
    seed: int = 0
    utility: UtilityConfig = field(default_factory=UtilityConfig)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {TASKS}")
        if self.mode not in generation.MODES:
            raise ValueError(f"mode must be one of {generation.MODES}, got {self.mode!r}")
        if self.k < 2 or self.n < 1:
            raise ValueError(f"need k >= 2 documents and n >= 1 questions (k={self.k}, n={self.n})")

    @property
    def positions(self) -> tuple[int, ...]:
        """Gold positions, 0-based: first, middle, last (1st, 10th, 20th for k = 20)."""
        return (0, (self.k - 1) // 2, self.k - 1)

    def to_dict(self) -> dict:
        return asdict(self)


class Study:
    """Lazily computed, disk-cached artifacts of one model on one task."""

    def __init__(self, loaded, cfg: QAConfig, retrieval_threshold: float, utility_threshold: float):
        self.loaded, self.cfg = loaded, cfg
        self.retrieval_threshold, self.utility_threshold = retrieval_threshold, utility_threshold
        self.model, self.tok = loaded.model, loaded.tokenizer
        self.fingerprint = generation.model_fingerprint(self.model)

    def _key(self, **more) -> dict:
        return {"model": self.fingerprint, "qa": self.cfg.to_dict(), "code": CODE_VERSION, **more}

    # -- data ----------------------------------------------------------------------
    @cached_property
    def examples(self) -> dict[int, list]:
        """{gold position: examples}; question i is the same question at every position."""
        cfg = self.cfg
        if cfg.data:
            rows = [ex for path in cfg.data for ex in qa_data.read_litm(path)][: cfg.n]
            return {p: [qa_data.place_gold(ex, p, cfg.k) for ex in rows] for p in cfg.positions}
        if cfg.task == "synthetic":
            return {p: qa_data.synthetic_task(cfg.n, cfg.k, p, seed=cfg.seed) for p in cfg.positions}
        oracle = qa_data.load_oracle()
        return {p: qa_data.build_k_doc(oracle, cfg.k, p, cfg.distractors, seed=cfg.seed, n=cfg.n)
                for p in cfg.positions}

    @cached_property
    def prompts(self) -> dict[int, list]:
        style = self.loaded.prompt_style
        return {p: P.build_prompts(exs, style, self.tok) for p, exs in self.examples.items()}

    @cached_property
    def audit(self) -> dict:
        """Questions whose prompt (plus the answer budget) exceeds the context length are
        left out at every position (so positions stay paired), and counted."""
        max_len = getattr(self.model.config, "max_position_embeddings", 10 ** 9)
        too_long, lengths = set(), []
        for ps in self.prompts.values():
            a = P.audit(ps, self.tok, max_len, reserve=self.cfg.max_new_tokens)
            too_long |= set(a.too_long)
            lengths += a.lengths
        return {"kept": [i for i in range(self.cfg.n) if i not in too_long],
                "skipped_too_long": sorted(too_long), "max_len": max_len,
                "tokens_min": min(lengths), "tokens_mean": float(np.mean(lengths)),
                "tokens_max": max(lengths)}

    def _kept(self, pos: int) -> list:
        return [self.prompts[pos][i] for i in self.audit["kept"]]

    # -- answers ---------------------------------------------------------------------
    def answers(self, variants: list[str], mode: str | None = None,
                questions: int | None = None) -> dict[str, dict[int, list[str]]]:
        """{variant: {position: answers}} for the first ``questions`` kept questions (all by
        default); "none" is unmasked, "utility" masks u < 0.5 in every head, the
        MASK_VARIANTS mask the retrieval heads. One sweep over all positions, so contexts
        that share a prefix (the documents before the gold one) share its computation."""
        n = len(self.audit["kept"]) if questions is None else min(questions, len(self.audit["kept"]))
        masks = {v: self.mask(v) for v in variants}
        prompts = [p for pos in self.cfg.positions for p in self._kept(pos)[:n]]
        got = generation.sweep(self.loaded, self.tok, prompts, masks, mode=mode or self.cfg.mode,
                               max_new_tokens=self.cfg.max_new_tokens, batch_size=self.cfg.batch_size)
        return {v: {pos: got[v][j * n:(j + 1) * n] for j, pos in enumerate(self.cfg.positions)}
                for v in variants}

    def mode_check(self) -> dict:
        """Fast mode (mask from the question on) against faithful (mask at every position)
        on the first ``n_mode_check`` questions at every position: accuracy of each and how
        often the two answers agree, per masked variant (unmasked, the modes are one)."""
        def compute():
            variants, n = ["utility", *MASK_VARIANTS], self.cfg.n_mode_check
            got = {m: self.answers(variants, m, n) for m in generation.MODES}
            golds = [self.examples[p][i].answers for p in self.cfg.positions for i in self.audit["kept"][:n]]
            out = {}
            for v in variants:
                fast, faithful = ([a for p in self.cfg.positions for a in got[m][v][p]] for m in ("fast", "faithful"))
                c = {m: [best_subspan_em(a, g) for a, g in zip(ans, golds)]
                     for m, ans in (("fast", fast), ("faithful", faithful))}
                out[v] = {"n": len(golds), "accuracy_fast": 100 * float(np.mean(c["fast"])),
                          "accuracy_faithful": 100 * float(np.mean(c["faithful"])),
                          "same_correctness": float(np.mean([a == b for a, b in zip(c["fast"], c["faithful"])])),
                          "same_answer": float(np.mean([first_line(a) == first_line(b)
                                                        for a, b in zip(fast, faithful)]))}
            return out
        if self.cfg.n_mode_check < 1:
            return {}
        key = self._key(kind="mode_check", thresholds=[self.retrieval_threshold, self.utility_threshold])
        faithful = lambda: self.answers(["utility", *MASK_VARIANTS], "faithful", self.cfg.n_mode_check)
        return cache.cached("mode_check", key, compute, unlocked=faithful)  # workers share `faithful`

    def correct_all(self) -> dict[str, np.ndarray]:
        """Correctness under every variant, computed once. The answers come from one sweep
        (unmasked and masked rows of a context share its prefill), whose batches the xdist
        workers that need it split between them."""
        variants = ["none", "utility", *MASK_VARIANTS]
        key = self._key(kind="correct", variants=variants,
                        thresholds=[self.retrieval_threshold, self.utility_threshold])
        return cache.cached("correct", key, lambda: self.correct(variants),
                            unlocked=lambda: self.answers(variants))

    def correct(self, variants: list[str]) -> dict[str, np.ndarray]:
        """{variant: 0/1 correctness [positions, kept questions]} (best_subspan_em)."""
        ans = self.answers(variants)
        golds = {p: [self.examples[p][i].answers for i in self.audit["kept"]] for p in self.cfg.positions}
        return {v: np.array([[best_subspan_em(a, g) for a, g in zip(ans[v][p], golds[p])]
                             for p in self.cfg.positions]) for v in variants}

    # -- retrieval and utility scores -------------------------------------------------
    @cached_property
    def scores(self) -> dict[str, torch.Tensor]:
        """{"retrieval": [L, H], "utility": [L, H, Dh]} from the model's own answers."""
        key = self._key(kind="scores")
        return cache.cached("scores", key, self._compute_scores)

    def _analysis_items(self) -> list[tuple[int, int]]:
        """(position, question) pairs, round-robin over positions."""
        kept, ps = self.audit["kept"], self.cfg.positions
        items = [(ps[j % len(ps)], kept[j // len(ps)]) for j in range(len(ps) * len(kept))]
        return items[: self.cfg.n_analysis]

    def _compute_scores(self) -> dict[str, torch.Tensor]:
        kept, items = self.audit["kept"], self._analysis_items()
        # unmasked answers of the analysis questions only: the rest come with the masked sweep
        none = self.answers(["none"], questions=max(kept.index(i) for _, i in items) + 1)["none"]
        prepared, retrieval = [], []
        for pos, i in tqdm(items, desc="capture q, K, V"):
            tok = P.tokenize_prompt(self.prompts[pos][i], self.tok)
            answer = none[pos][kept.index(i)]
            ans_ids = self.tok(answer, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([tok.input_ids + ans_ids])
            q_sel = slice(tok.question_start, ids.shape[1])  # question and output part
            with torch.inference_mode(), hooks.capture(self.model, positions=q_sel,
                                                       keep=("q", "k", "v")) as cap:
                self.model(input_ids=ids, logits_to_keep=1)
            bos = 0 if ids[0, 0].item() == getattr(self.tok, "bos_token_id", None) else None
            retrieval.append(retrieval_scores(cap, None, tok.context, bos_index=bos))
            prepared.append(prepare_utility(dict(cap), self.cfg.utility))  # the capture is dropped
        u = utility_scores(prepared, self.cfg.utility)
        return {"retrieval": average_scores(retrieval), "utility": u.u,
                "utility_converged": u.converged, "utility_error": u.error}

    @property
    def retrieval_heads(self) -> list[tuple[int, int]]:
        return retrieval_heads(self.scores["retrieval"], self.retrieval_threshold)

    def mask(self, variant: str) -> torch.Tensor | None:
        if variant == "none":
            return None
        if variant == "utility":
            return hooks.mask_from_utility(self.scores["utility"], self.utility_threshold)
        which, fraction = MASK_VARIANTS[variant]
        k = dims_in_fraction(self.loaded.anatomy.head_dim, fraction)
        return hooks.mask_first_last(self.loaded.anatomy, which, k, self.retrieval_heads)

    def describe(self) -> dict:
        cfg = self.cfg
        data = (", ".join(cfg.data) if cfg.data else
                "synthetic retrieval task (ropedim.qa_data.synthetic_task)" if cfg.task == "synthetic"
                else f"NQ-open oracle file, {cfg.distractors} distractors ({qa_data.default_oracle_path()})")
        return {**{k: v for k, v in cfg.to_dict().items() if k != "utility"},
                "utility": asdict(cfg.utility), "positions_1based": [p + 1 for p in cfg.positions],
                "data": data, "prompt_style": self.loaded.prompt_style,
                **{k: v for k, v in self.audit.items() if k != "kept"}, "n_kept": len(self.audit["kept"])}
