"""The paper as data: its claims (quote, section, figures), its tables and correlations.

Chiang & Yogatama (2025), arXiv:2502.11276. Numbers are typed once, from the paper's
tables; every derived number (an accuracy change, a position gap) is computed from them.
"""

from __future__ import annotations

from dataclasses import dataclass

MODELS = ("Llama", "OLMo", "Qwen")  # the paper's order in its tables


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    quote: str
    evidence: str  # what the paper shows for it
    figures: tuple[str, ...] = ()  # figure kinds drawn by ropedim.figures for this claim
    decisions: tuple[str, ...] = ()  # what the paper leaves open and what we chose
    paper_table: dict | None = None  # {model: {mask: [1st, 10th, 20th, avg]}} (Tables 1-3)


# Accuracy (%), gold at the 1st / 10th / 20th document, and the average.
TABLE1 = {  # Table 1 / 3: dims with utility < 0.5 masked in every head
    "Llama": {"none": [60.49, 53.18, 48.59, 54.09], "utility": [58.98, 52.66, 50.81, 54.15]},
    "OLMo": {"none": [59.32, 53.45, 57.21, 56.66], "utility": [59.51, 53.52, 59.62, 57.55]},
    "Qwen": {"none": [60.41, 57.14, 58.61, 58.72], "utility": [60.49, 55.25, 56.35, 57.36]},
}
TABLE2 = {  # Table 2: first/last dims of the retrieval heads (score > 0.5) masked
    "Llama": {"none": [60.49, 53.18, 48.59, 54.09], "first16": [60.79, 53.75, 50.32, 54.95],
              "first32": [59.51, 52.77, 47.88, 53.39], "last16": [13.82, 17.29, 51.98, 27.70],
              "last32": [4.07, 5.27, 36.20, 15.18]},
    "OLMo": {"none": [59.32, 53.45, 57.21, 56.66], "first16": [60.19, 52.92, 57.48, 56.86],
             "first32": [60.83, 52.84, 57.02, 56.90], "last16": [42.21, 40.11, 56.12, 46.15],
             "last32": [29.87, 33.37, 46.48, 36.57]},
    "Qwen": {"none": [60.41, 57.14, 58.61, 58.72], "first16": [63.81, 58.98, 61.13, 61.31],
             "first32": [60.72, 51.22, 57.66, 56.53], "last16": [19.62, 20.60, 19.51, 19.91],
             "last32": [0.30, 0.45, 0.98, 0.58]},
}
FIG3_RHO = {"Llama": (-0.34, 0.38), "OLMo": (-0.12, 0.20), "Qwen": (0.10, 0.54)}  # ρ(retrieval, u first16 / last16)
FIG4_RHO = {"Llama": (-0.47, 0.44), "OLMo": (-0.03, 0.26), "Qwen": (-0.27, 0.10)}  # ρ(W_q L1, u first16 / last16)


def delta_avg(table: dict, mask: str) -> dict[str, float]:
    """Masked − original average accuracy, points, per model."""
    return {m: rows[mask][3] - rows["none"][3] for m, rows in table.items()}


def position_gap(table: dict, mask: str) -> dict[str, float]:
    """(masked − original) at the 20th document minus at the 1st, points, per model."""
    return {m: (rows[mask][2] - rows["none"][2]) - (rows[mask][0] - rows["none"][0]) for m, rows in table.items()}


def position_retention(table: dict, mask: str) -> dict[str, float]:
    """Retention (masked / original accuracy) at the 20th document minus at the 1st, per model."""
    return {m: rows[mask][2] / rows["none"][2] - rows[mask][0] / rows["none"][0] for m, rows in table.items()}


def fmt(per_model: dict[str, float], digits: int = 2) -> str:
    """'+0.86 / +0.20 / +2.59' in the paper's model order (Llama / OLMo / Qwen)."""
    return " / ".join(f"{per_model[m]:+.{digits}f}".replace("-", "−") for m in MODELS)


def fmt_rho(table: dict, which: int) -> str:
    return fmt({m: v[which] for m, v in table.items()})


TOY_DECISIONS = (
    "Positions: each key at a uniform random position in [0, max_position); the query at "
    "max_position, after all keys (relative distances uniform in [1, max_position]).",
    "K, V: the target pair plus subset − 1 others drawn without replacement; P(v) over all n values.",
    "Attention softmax(q·k/√d); RoPE as LLaMA's (base 10000) on q and k; vectors start N(0, 1); "
    "Adam; the rope and no-rope heads of a seed share initialisation and data.",
)
QA_DECISIONS = (
    "Data: the paper's 20-document files when given (--qa-data); otherwise k-document "
    "contexts built from the 2655-question NQ-open oracle file (gold at the first, middle "
    "or last position; BM25-retrieved distractors that contain no gold answer), and the "
    "project's synthetic retrieval task in the same format. The report names which.",
    "Accuracy: best_subspan_em as Liu et al. (prediction cut at its first line), greedy "
    "decoding; the same questions and distractors at every gold position (paired).",
    "A model too weak on a task (original accuracy below the table's floor) gives "
    "'inconclusive', never a pass.",
)
UTILITY_DECISIONS = (
    "Eq. 4, the literal reading (primary): per example the squared error of the head's output "
    "summed over every query position of instruction + documents + question + the model's own "
    "answer (its generated token ids), plus α‖u‖₁ with α = 1/head_dim; the mean of those "
    "objectives over the analysis examples; u multiplies the query before RoPE (so q·k still "
    "depends on n − m only). The context rows' sum is estimated from a seeded uniform sample, "
    "weighted up (every question and answer row is kept).",
    "Other readings shown beside it (the sensitivity table): question-and-answer rows only; "
    "the mean over those rows with u after RoPE (ropedim's earlier reading); the literal one "
    "with u after RoPE. Table 1 (masking u < 0.5 costs at most 1.4 points) is the paper's own "
    "sanity check of a reading.",
    "u = clamp to [0, 1] after each Adam step from u = 1; all heads of all layers "
    "optimised together; GQA: K, V of the head's KV group. Analysis examples: the first "
    "questions of the QA set, each at every gold position.",
)
RETRIEVAL_DECISIONS = (
    "Retrieval score: per head, the attention weight from the question-and-answer tokens "
    "onto the instruction and documents, excluding the first (begin-of-string) token, "
    "averaged over those tokens and over examples. Retrieval heads: score above the "
    "table's retrieval threshold (the paper's 0.5).",
)
MASK_DECISIONS = (
    "'First/last 16 of 128' is scaled to the head: one eighth (32 of 128: one quarter), "
    "whole rotary pairs, in θ order read from the model.",
    "Mask on the query of a query head (GQA: K, V untouched), at every position (the paper's "
    "faithful mode). Fast mode (from the question on, the unmasked context shared) stands in "
    "only where faithful − fast is measured within the table's tolerance; each verdict names its mode.",
    "Paired statistics against the unmasked run on the same questions: the change in accuracy "
    "points (averaged over gold positions), a question with all its positions as the unit "
    "(Tango's score interval, widened by the design effect), McNemar's test beside it. A mask "
    "that masks almost nothing, or changes no answer, cannot support a no-harm claim.",
)

# in the paper's order (the appendix's Fig. 4 last): the report's matrix and sections follow it
CLAIMS = {c.id: c for c in [
    Claim("C2", "§2, Eq. 2",
          "Let a query vector and a key vector at position m, n [...] RoPE rotates them with RoPE matrices "
          "M_m and M_n respectively, so the dot product for computing the attention weight is "
          "RoPE(q_m)·RoPE(k_n) = (M_m q_m)ᵀ(M_n k_n) = q_mᵀ M_{n−m} k_n",
          "an identity: the score depends on the positions only through n − m",
          decisions=("Cases: random q, k (unit-normal), positions and shifts up to 4096, head sizes 64, 128, 256, "
                     "bases 1e4 and 1e6, the paper's interleaved layout and Hugging Face's half-split one, float32.",)),
    Claim("C4a", "§4, Fig. 1a",
          "It shows that the model trained with RoPE applied learns to assign lower weights to "
          "the first few dimensions of {q_i} and {k_i}. [...] In contrast, the models without "
          "RoPE do not exhibit these phenomena.",
          "plot: lower |q|, |k| in the first dims with RoPE; flat without", figures=("fig1a",),
          decisions=TOY_DECISIONS + (
              "Statistic: log(mean |q|,|k| over the last eighth of dims / over the first "
              "eighth), dims in θ order (16 of 128 as in §5), each dim's magnitude relative to "
              "its no-RoPE twin (the same seed, initialisation and data), which cancels the "
              "initialisation scale; replicates are seeds (t interval). The Spearman trend over θ "
              "rank is shown beside it.",
              "Initialisation (the paper does not say): N(0, 1) for the verdict; --profile paper also "
              "trains N(0, 1/d), shown beside it.")),
    Claim("C4b", "§4, Fig. 1b",
          "when RoPE is applied, removing the first few dimensions does not affect the loss "
          "significantly, while removing the last few dimensions greatly increases the loss. "
          "[...] In contrast, the models without RoPE do not exhibit these phenomena.",
          "plot: flat loss when the first dims go, steep when the last go; symmetric without RoPE",
          figures=("fig1b",),
          decisions=TOY_DECISIONS + (
              "Removing a dim sets it to 0 in q (hence its term of q·k) on a fixed evaluation "
              "set; 'a few dims' is a quarter of the head (32 of 128); replicates are seeds.",)),
    Claim("C5a", "§5, Fig. 2a and Fig. 5",
          "For quick inspection, we first plot the L1 norm of the rows in the query projection "
          "matrices in all the attention heads in Figure 2. It shows increasing trends for all "
          "three models, as we have found in the toy experiment (Figure 1(a)).",
          "plot: increasing trend for Llama, Qwen and OLMo", figures=("fig2a", "fig5"),
          decisions=(
              "Dims are ordered by the θ each layer actually uses (read from the model's rotary "
              "module: llama3/YaRN scaling, Gemma 3's local and global bases).",
              "Statistic, as the paper's evidence (Fig. 2a, the curve averaged over layers and heads): "
              "the Spearman correlation of that curve with θ rank; interval from a bootstrap over "
              "layers (heads of a layer are not independent). The per-head trend (its mean and the share "
              "of heads with a positive one) is shown, descriptive.",
              "OLMo 2 and Gemma 3 normalise q before RoPE, so the row norm is not the effective "
              "scale; the 'scaled' check multiplies each row by |q_norm weight| "
              "(for OLMo 2, whose norm spans all heads, this is the per-dim gain).",
              "GQA does not enter: W_q rows belong to query heads.",
          )),
    Claim("C5b", "§5.2, Fig. 2b and Fig. 6",
          "We find that the utility scores of the first few dimensions are lower than the "
          "last few dimensions [...] (Figure 2b)",
          "plot: average utility rises with dimension index", figures=("fig2b", "fig6"),
          decisions=QA_DECISIONS + UTILITY_DECISIONS),
    Claim("C5c", "§5.2, Table 1 and Table 3",
          "masking the dimensions with low utility scores does not greatly decrease the performance",
          "Δ avg accuracy (Llama / OLMo / Qwen): " + fmt(delta_avg(TABLE1, "utility")) + " points",
          paper_table=TABLE1, figures=("accuracy_by_position",), decisions=QA_DECISIONS + UTILITY_DECISIONS + (
              "Masked: every query dim with u below the utility threshold, in every head, at every "
              "position (fast mode: from the question on). Non-inferiority: the paired bootstrap "
              "interval of masked − original accuracy (points, averaged over gold positions) must "
              "lie above the table's bound.",)),
    Claim("C5d", "§5.3, Fig. 3",
          "the utility scores of the last 16 dimensions are positively correlated with the "
          "retrieval score, while the first 16 dimensions are negatively correlated "
          "(except for Qwen)",
          f"ρ first16: {fmt_rho(FIG3_RHO, 0)}; last16: {fmt_rho(FIG3_RHO, 1)} (Llama / OLMo / Qwen)",
          figures=("fig3",), decisions=QA_DECISIONS + UTILITY_DECISIONS + RETRIEVAL_DECISIONS),
    Claim("C5e", "§5.4, Table 2",
          "masking the first 16 dimensions of the retrieval heads slightly increases the "
          "average accuracy [...] masking the first 32 dimensions [decreases it by] less than "
          "2.2 points",
          f"Δ avg first16: {fmt(delta_avg(TABLE2, 'first16'))}; first32: {fmt(delta_avg(TABLE2, 'first32'))} "
          "points (Llama / OLMo / Qwen)", paper_table=TABLE2, figures=("accuracy_by_position",),
          decisions=QA_DECISIONS + RETRIEVAL_DECISIONS + MASK_DECISIONS),
    Claim("C5f", "§5.4, Table 2",
          "masking the last 32 dimensions of the retrieval heads is detrimental; masking the "
          "last 16 also hurts, but less so when the answer is in the 20th document",
          f"Δ avg last16: {fmt(delta_avg(TABLE2, 'last16'), 1)}; last32: {fmt(delta_avg(TABLE2, 'last32'), 1)} "
          "points (Llama / OLMo / Qwen)", paper_table=TABLE2, figures=("accuracy_by_position",),
          decisions=QA_DECISIONS + RETRIEVAL_DECISIONS + MASK_DECISIONS + (
              "'Less so in the 20th document': retention (masked / original accuracy) at the last "
              "position minus at the first, not the difference of accuracy changes, which equals "
              "the unmasked primacy effect when masking floors accuracy everywhere; masked accuracy "
              "must be above the floor at one of the two positions.",)),
    Claim("C-Fig4", "Appendix, Fig. 4",
          "the correlation between the L1 norm of the rows of W_q and the utility scores of "
          "the first and last dimensions",
          f"ρ first16: {fmt_rho(FIG4_RHO, 0)}; last16: {fmt_rho(FIG4_RHO, 1)} (Llama / OLMo / Qwen)",
          figures=("fig4",), decisions=UTILITY_DECISIONS + (
              "Per head: x = mean L1 norm of the W_q rows of those dims, y = their mean "
              "utility; Pearson ρ across heads.",)),
]}


# ---------------------------------------------------------------- beyond the paper (issue 14)
# Claims the paper does not make, on its own argument: every check of these is beyond=True.
DOSE_DECISIONS = (
    "Masks: in the retrieval heads (score > 0.5, as C5e/C5f), the first k, the last k, or k random dims of "
    "each head, k = D/16, D/8, D/4, D/2 of a head of D dims; whole rotary pairs in θ order; random pairs "
    "drawn per head, 3 seeded draws (their mean is the control). The query is masked after RoPE, as the "
    "masks of C5e/C5f: whole pairs commute with RoPE.",
    "Measure: the gold answer's teacher-forced log-probability (its first gold answer, summed over its "
    "tokens), paired per question; a question is asked at every gold position, so intervals come from a "
    "bootstrap over questions. Verdict at the paper's k = D/8; the whole curve is in the record and the "
    "figure. The random control is the mean of its 3 draws; the interval is over questions for that mean, "
    "and each draw's own interval is in the record (draws can disagree: which pairs a draw hits matters).",
    "Masking mode as C5e/C5f's masks in the profile: fast in the default profile (the context prefilled "
    "once, unmasked; every mask from the question on), faithful (every position) in --profile paper. The "
    "contrast compares masks in the same mode.",
    "Questions needed, log-prob against accuracy: for C5e's contrast at k = D/8 (first eighth masked − "
    "unmasked), the n at which each measure's 95% interval would just exclude 0 at its measured effect "
    "and spread (variance formula, n·(half-width/|effect|)²); accuracy from C5e's cached answers.",
    "Accuracy curves: the same masks and questions answered in the same mode (a decoding per prompt and mask; "
    "Liu et al.'s first-line scoring), shown beside the log-prob curves; the record gives, from these same "
    "questions, how many each measure would need to decide C5e's contrast at k = D/8.",
    "Efficiency (descriptive, the figure's last panel and the record's frontier): a masked query dim can be "
    "removed from q and k altogether (ropedim.prune, equal outputs, tests/test_prune.py); per mask, the share "
    "of attention-score multiply-adds and of the K cache it would save (a key dim only where every query head "
    "of its KV group drops it) against the log-prob change: the masks of the curve (retrieval heads) and the "
    "first k of every head.",
)
CLAIMS.update({c.id: c for c in [
    Claim("B-dose", "beyond the paper: §5.4 extended (issue 14)",
          "masking the first k dimensions of the retrieval heads costs less than masking k random "
          "dimensions, which costs less than masking the last k",
          "the paper masks 16 or 32 of 128 dims once (Table 2); no random-dims control, no curve",
          figures=("dose_curve", "dose_accuracy"), decisions=QA_DECISIONS + RETRIEVAL_DECISIONS + DOSE_DECISIONS),
]})
CRITICAL_DECISIONS = TOY_DECISIONS + (
    "Prediction: Liu et al. (2023), d_c = 2⌈(d/2)·log_b(T/2π)⌉, the dims (θ order) whose period 2π/θ fits in "
    "the training length T; in the toy T is the maximum position (distances are uniform in [1, T]).",
    "Grid: base b ∈ {500, 10⁴, 10⁶} × maximum position T ∈ {256, 2048}, the profile's toy otherwise (the "
    "default toy is its (10⁴, 2048) cell); RoPE heads only (a no-RoPE head has no b or T), the profile's first "
    "3 seeds, each cell trained once and cached.",
    "Estimator: the least-squares change point of the mean |q|,|k| per rotary pair in θ order (the split, in "
    "whole pairs, minimising the squared error of a two-level step), in coordinates.",
    "Statistics, replicates are seeds (t interval): the slope of measured on predicted over the grid "
    "(intercept beside it), and the mean absolute error as a share of the head's dims. Each cell's final "
    "training loss is shown beside its curve; a cell that learns the task poorly is kept, not dropped.",
    "LLMs: d_c from each layer's θ (the pairs whose period is shorter than T; Gemma 3's local and global "
    "layers get their own) and T = the model's configured context (max_position_embeddings; 8192 for "
    "smollm2, 32768 for qwen2.5-1.5b), against the change point of the W_q row-norm curve and of the utility "
    "curve averaged over layers and heads; bootstrap over layers; within an eighth of the head. A model "
    "pretrained at a shorter length than its configured context would have a smaller d_c.",
)
CLAIMS.update({c.id: c for c in [
    Claim("B-critical", "beyond the paper: §4 with Liu et al. (2023)'s critical dimension (issue 14)",
          "the dims whose rotation period fits in the training length, d_c = 2⌈(d/2)·log_b(T/2π)⌉ of them, are "
          "the ones a RoPE head learns to leave small: the magnitude curve rises at d_c and moves with b and T",
          "the paper argues it for high frequencies (§3-4) without a prediction of where; Fig. 1a's step is near "
          "dim 44 of 64 where d_c = 42 (b = 10⁴, T = 2048)",
          figures=("critical_fig",), decisions=CRITICAL_DECISIONS),
]})

# ---------------------------------------------------------------- beyond the paper, issue 19 (§3, §4)
# Claims of later studies on the same question, checked on the same models beside the paper's
# (their checks are ``beyond=True``; the matrix lists them after the paper's claims).
ACT_DECISIONS = (
    "Activations: one forward pass per analysis example (the first n_analysis questions at every gold "
    "position), the prompt alone; the norms are averaged over every prompt token but the first (the "
    "attention sink, whose activations are outliers; our choice), then over examples.",
    "A rotary pair is storage j with j + P (half split, read from the model); its norm is the same before "
    "and after the rotation, so the key's pair norm is read after RoPE (divided by YaRN's cos/sin "
    "multiplier where there is one). Query: before RoPE, after any q norm.",
    "Statistic: C5a's, on pairs: the curve averaged over layers and heads in θ order, its Spearman "
    "correlation with θ rank, a bootstrap over layers, the bar the null's 99th percentile for the number "
    "of pairs (32 on a 64-dim head: a stricter bar than C5a's on 64 single rows).",
    "Control of the reading (Barbero et al.): a head is local when its queries (positions t ≥ 2) put more "
    "than half their attention on the keys t and t − 1; local heads should put a larger share of their "
    "query norm in the highest-frequency eighth of the pairs than the other heads.",
)
MASSIVE_DECISIONS = (
    "A head's massive dim: the pre-RoPE query dim with the largest mean |value| over the analysis tokens "
    "(Jin et al. rank dims by their L2 norm over tokens; the two agree on heavy-tailed dims). The lower-"
    "frequency half: pairs of θ rank ≥ P/2 (dims outside the rotary part count as θ = 0).",
    "Ablation (Jin et al.'s add_mean_perturbation): in every head at once, the dim is replaced by its mean "
    "over the analysis tokens at every position (a forward hook on the module that outputs the query before "
    "RoPE); against one random other dim of each head replaced the same way (two seeded draws, averaged). "
    "Measure: the gold answer's teacher-forced log-prob (ropedim.logprob) on the first 10 kept questions at "
    "every gold position (our choice: CI's budget; 4 passes of 30 prompts), paired per question.",
)
CLAIMS.update({c.id: c for c in [
    Claim("B-act", "beyond the paper: Barbero et al. (ICLR 2025), activations",
          "[Per layer, head and rotary pair, the mean 2-norm of the query and key pair over the tokens of many "
          "prompts:] Gemma 7B and Llama 3.1 8B put most norm in the lowest frequencies; a few heads [...] use "
          "the highest frequencies to build diagonal and previous-token attention.",
          "heatmaps of pair norms by frequency: a second witness, from activations, for C5a (W_q rows) and C5b "
          "(utility): the last (low-frequency) dims carry more of the query",
          figures=("act_heatmap", "act_profile"), decisions=QA_DECISIONS[:1] + ACT_DECISIONS),
    Claim("B-massive", "beyond the paper: Jin et al. (ICML 2025), massive values",
          "Concentrated large values sit in low-frequency dims of Q and K [...] only in RoPE models; [replacing "
          "them by their mean over tokens disrupts contextual knowledge].",
          "per head, the largest query dim lies in the low frequencies; mean-replacing it costs more than a "
          "random dim: C5a/C5b's last dims, seen as the dims a head's query is made of",
          figures=("massive_dims",), decisions=QA_DECISIONS[:1] + ACT_DECISIONS[:1] + MASSIVE_DECISIONS),
]})

# ---------------------------------------------------------------- beyond the paper, issue 19 (§1)
HEADS_DECISIONS = (
    "Heads: the top 5% of all heads by the §5.3 retrieval score (ties: lower layer and head first; the verdict; "
    "the top 1% and 2% are shown beside it, and a verdict that differs between them is fragile), against "
    "as many random heads drawn from the same layers, the top heads excluded (5 seeded draws, averaged); as an "
    "alternative, random heads drawn from every layer (a model with few heads per layer leaves the same-layer "
    "draw little to choose: the record says how many distinct sets it could draw). A 'not supported' that "
    "differs between these alternatives puts C5e/C5f's precondition in doubt (◌), not failed (⛔). The "
    "paper's own set (score > 0.5) is reported but not measured where it holds every head of a layer (no "
    "same-layer control exists; so on smollm2).",
    "Forms: zero output (the head's attention output set to 0 before o_proj, every position) and uniform "
    "attention (the head's post-RoPE query set to 0: every score 0, attention uniform over the causal keys; "
    "Wu et al.'s form). Measure: the gold answer's teacher-forced log-prob (ropedim.logprob) on the first 10 "
    "kept questions at every gold position (our choice: CI's budget), paired per question.",
)
CLAIMS.update({c.id: c for c in [
    Claim("B-heads", "beyond the paper: the retrieval heads are causally necessary (the premise of §5.4)",
          "[§5.4 masks dims of the retrieval heads only:] the heads found by the retrieval score (§5.3) are the "
          "ones long-distance retrieval uses.",
          "masking the top-k retrieval heads costs more gold log-prob than masking k random heads of the same "
          "layers: the precondition of C5e and C5f (issue 19 §1)",
          figures=("head_masking_fig",), decisions=QA_DECISIONS[:1] + HEADS_DECISIONS),
]})

# ---------------------------------------------------------------- beyond the paper, issue 19 (§2)
FORMS_DECISIONS = (
    "Masks: C5e/C5f's, the first and the last eighth of each retrieval head's dims (score > 0.5; 16 of 128, "
    "8 of smollm2's 64), whole rotary pairs in θ order (the paper's), at every position.",
    "Forms (the primary is the paper's: zero, pairs, query only): the masked query dims replaced, before RoPE, "
    "by their mean over the analysis tokens (Jin et al.); as many coordinates zeroed but by storage index, "
    "the first/last k (a reader who assumes interleaved pairs; on HF's half split it takes one coordinate of "
    "twice as many pairs), before RoPE; the paper's pairs zeroed in the query and in the key of the KV head "
    "each retrieval head reads (for a 0/1 mask this equals the query-only form in the head itself; it differs "
    "through the other query heads sharing that KV head).",
    "Measure: the gold answer's teacher-forced log-prob (ropedim.logprob), paired per question, gold "
    "positions averaged within a question, on the first 10 kept questions at every gold position (our choice: "
    "CI's budget; 9 passes of 30 prompts); a bootstrap over questions. Accuracy under each form is not "
    "measured (a decoding per prompt and form); issue 14 measured that the log-prob decides C5e's contrast "
    "with about half the questions accuracy needs.",
    "A verdict that differs between forms is marked fragile: the paper does not test its form.",
)
CLAIMS.update({c.id: c for c in [
    Claim("B-forms", "beyond the paper: the ablation's form (robustness of C5e and C5f)",
          "[§5.4:] we mask the first or last 16/32 dimensions of the query in the retrieval heads [by zeroing].",
          "C5e/C5f's contrast and C5f's cost, with the dims taken away by zero or mean, by θ-rank pairs or by "
          "storage index, in the query or in query and key: does the verdict depend on the form? (issue 19 §2)",
          figures=("ablation_forms_fig",), decisions=QA_DECISIONS[:1] + RETRIEVAL_DECISIONS + FORMS_DECISIONS),
]})
