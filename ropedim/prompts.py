"""Prompts for multi-document QA (App. B) and where their parts are, in characters and tokens.

App. B: "Write a high-quality answer for the given question using only the provided search
results (some of which might be irrelevant)." then ``Document [k](Title: {title}) {content}``
lines, then ``Question: {question}``, wrapped in each model's chat format. Styles:

- ``llama``, ``olmo``, ``qwen``: App. B's text, newline for newline (the paper shows one
  newline after each header; the model's own template may use two);
- ``chat_template``: instruction, documents and question as the user turn of the
  tokenizer's own chat template, with the generation prompt, laid out as Liu et al.'s
  ``qa.prompt`` without "Answer:" (blank lines around the documents: with App. B's single
  newlines SmolLM2-135M-Instruct tends to copy "Document [1](Title: ..." as its answer);
- ``plain``: Liu et al.'s ``qa.prompt`` for base models:
  ``{instruction}\\n\\n{documents}\\n\\nQuestion: {question}\\nAnswer:``.

§5.3 needs the parts: the retrieval score sums "the attention weight from the question
and output part onto the context part (instruction and documents)". ``Prompt.spans`` gives
character spans of "instruction", "documents", "context" (instruction start to documents
end) and "question"; ``tokenize_prompt`` maps them to tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

from ropedim.qa_data import Example

__all__ = ["INSTRUCTION", "STYLES", "Prompt", "Tokenized", "Audit", "build_prompt",
           "build_prompts", "tokenize_prompt", "encode", "adds_bos", "audit"]

INSTRUCTION = ("Write a high-quality answer for the given question using only the provided "
               "search results (some of which might be irrelevant).")

# style -> (before instruction, instruction->documents, documents->question, after question)
_WRAP = {
    "llama": ("<|start_header_id|>system<|end_header_id|>\n",
              "\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n", "\n",
              "\n<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"),
    "olmo": ("<|endoftext|><|user|>\n", "\n", "\n", "\n<|assistant|>\n"),
    "qwen": ("<|im_start|>system\n", "<|im_end|>\n<|im_start|>user\n", "\n",
             "\n<|im_end|>\n<|im_start|>assistant\n"),
    "plain": ("", "\n\n", "\n\n", "\nAnswer:"),
    "chat_template": ("", "\n\n", "\n\n", ""),  # the user turn; the template wraps it
}
STYLES = tuple(_WRAP)


@dataclass(frozen=True)
class Prompt:
    text: str
    spans: dict[str, tuple[int, int]]  # character [start, end) of each part
    doc_spans: tuple[tuple[int, int], ...] = field(default=())  # one per document
    style: str = ""


class Tokenized(NamedTuple):
    input_ids: list[int]
    context: tuple[int, int]  # token [start, end) of instruction + documents
    question_start: int  # first token of "Question: ..."; the question+output part starts here
    docs: tuple[tuple[int, int], ...] = ()  # token [start, end) of each document line


class Audit(NamedTuple):
    lengths: list[int]  # tokens per prompt, BOS included
    too_long: list[int]  # indices whose prompt + reserve exceeds max_len
    max_len: int


def build_prompt(example: Example, style: str, tokenizer=None) -> Prompt:
    """The prompt text of ``example`` in ``style`` and the character spans of its parts."""
    if style not in _WRAP:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {STYLES}")
    pre, mid, before_q, post = _WRAP[style]
    parts: list[str] = [pre]
    pos = len(pre)
    spans: dict[str, tuple[int, int]] = {}
    docs: list[tuple[int, int]] = []

    def add(s: str, name: str | None = None):
        nonlocal pos
        if name:
            spans[name] = (pos, pos + len(s))
        parts.append(s)
        pos += len(s)

    add(INSTRUCTION, "instruction")
    add(mid)
    start = pos
    for k, d in enumerate(example.docs):
        if k:
            add("\n")
        line = f"Document [{k + 1}](Title: {d.title}) {d.text}"
        docs.append((pos, pos + len(line)))
        add(line)
    spans["documents"] = (start, pos)
    add(before_q)
    add(f"Question: {example.question}", "question")
    add(post)
    text = "".join(parts)
    if style == "chat_template":
        text, shift = _chat(text, tokenizer)
        spans = {k: (a + shift, b + shift) for k, (a, b) in spans.items()}
        docs = [(a + shift, b + shift) for a, b in docs]
    spans["context"] = (spans["instruction"][0], spans["documents"][1])
    return Prompt(text, spans, tuple(docs), style)


def _chat(user: str, tokenizer) -> tuple[str, int]:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("style 'chat_template' needs a tokenizer with a chat template; "
                         "use 'plain' for base models")
    text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)
    at = text.find(user)
    if at < 0:
        raise ValueError("the chat template changed the user turn; cannot locate its parts")
    return text, at


def build_prompts(examples: Sequence[Example], style: str, tokenizer=None) -> list[Prompt]:
    return [build_prompt(ex, style, tokenizer) for ex in examples]


def adds_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return len(with_special) > len(tokenizer("a", add_special_tokens=False)["input_ids"]) \
        and with_special[0] == bos


def tokenize_prompt(prompt: Prompt, tokenizer) -> Tokenized:
    """Token ids (with the BOS the tokenizer would add, unless the text starts with it) and
    the token positions of the context part and of the question start."""
    text = prompt.text
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if adds_bos(tokenizer) and not text.startswith(tokenizer.bos_token):
        ids, offsets = [tokenizer.bos_token_id] + ids, [(0, 0)] + offsets

    def first_ending_after(c: int) -> int:  # the token that holds character c
        return next((t for t, (a, b) in enumerate(offsets) if b > c and b > a), len(ids))

    def span(a: int, b: int) -> tuple[int, int]:  # characters [a, b) -> the tokens holding them
        return first_ending_after(a), first_ending_after(b - 1) + 1

    q = first_ending_after(prompt.spans["question"][0])
    return Tokenized(ids, span(*prompt.spans["context"]), q, tuple(span(a, b) for a, b in prompt.doc_spans))


def encode(p: "str | Prompt", tokenizer) -> tuple[list[int], int]:
    """Token ids and question-start token of a prompt (0 for a bare string)."""
    if isinstance(p, Prompt):
        t = tokenize_prompt(p, tokenizer)
        return t.input_ids, t.question_start
    ids = tokenizer(p, add_special_tokens=False)["input_ids"]
    if adds_bos(tokenizer) and not p.startswith(tokenizer.bos_token):
        ids = [tokenizer.bos_token_id] + ids
    return list(ids), 0


def audit(prompts: Sequence[Prompt], tokenizer, max_len: int, reserve: int = 0) -> Audit:
    """Token lengths, and which prompts (plus ``reserve`` new tokens) exceed ``max_len``.

    Nothing is dropped here: the caller reports the indices (Liu et al. skip such prompts).
    """
    lengths = [len(tokenize_prompt(p, tokenizer).input_ids) for p in prompts]
    return Audit(lengths, [i for i, n in enumerate(lengths) if n + reserve > max_len], max_len)
