"""Seeded random-init models of each architecture, with a byte-level tokenizer."""

from __future__ import annotations

import torch

from .specs import ModelSpec

__all__ = ["tiny_tokenizer", "tiny_model"]


def tiny_tokenizer():
    """A byte-level tokenizer (259 ids: <pad>, <s>, </s>, 256 bytes); no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(("<pad>", "<s>", "</s>"))}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[c] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_model(spec: ModelSpec, seed: int):
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(spec.tiny_config(), dtype=torch.float32)
        if spec.perturb_norms:  # non-trivial q/k norm weights, so tests see them (init: ones / zeros)
            for mod in model.modules():
                for nm in ("q_norm", "k_norm", "q_layernorm", "k_layernorm"):
                    if hasattr(mod, nm):
                        w = getattr(mod, nm).weight
                        w.data = w.data + 0.3 * torch.randn_like(w)
    return model
