"""App. B prompt templates, Liu et al.'s plain prompt, and the spans of their parts."""

import pytest

from ropedim.models import tiny_tokenizer
from ropedim.prompts import (INSTRUCTION, STYLES, audit, build_prompt, build_prompts,
                             tokenize_prompt)
from ropedim.qa_data import Doc, Example

EX = Example("0", "test question", ("x",), (Doc("first doc", "first doc text"),
                                            Doc("second doc", "second doc text", True),
                                            Doc("third doc", "third doc text")), 1)
DOCS = ("Document [1](Title: first doc) first doc text\n"
        "Document [2](Title: second doc) second doc text\n"
        "Document [3](Title: third doc) third doc text")

# App. B, newline for newline
APP_B = {
    "llama": ("<|start_header_id|>system<|end_header_id|>\n" + INSTRUCTION +
              "\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n" + DOCS +
              "\nQuestion: test question\n<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"),
    "olmo": ("<|endoftext|><|user|>\n" + INSTRUCTION + "\n" + DOCS +
             "\nQuestion: test question\n<|assistant|>\n"),
    "qwen": ("<|im_start|>system\n" + INSTRUCTION + "<|im_end|>\n<|im_start|>user\n" + DOCS +
             "\nQuestion: test question\n<|im_end|>\n<|im_start|>assistant\n"),
    # Liu et al.'s tests/test_prompting.py::test_get_qa_prompt
    "plain": INSTRUCTION + "\n\n" + DOCS + "\n\nQuestion: test question\nAnswer:",
}
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_instruction_is_the_papers():
    assert INSTRUCTION == ("Write a high-quality answer for the given question using only the "
                           "provided search results (some of which might be irrelevant).")


@pytest.mark.parametrize("style", list(APP_B))
def test_templates_exact(style):
    assert build_prompt(EX, style).text == APP_B[style]


@pytest.fixture(scope="module")
def tok():
    t = tiny_tokenizer()
    t.chat_template = CHATML
    return t


@pytest.fixture(scope="module")
def bos_tok():
    """The tiny tokenizer, adding <s> like Llama's and Gemma's do."""
    from tokenizers.processors import TemplateProcessing
    t = tiny_tokenizer()
    t.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return t


@pytest.mark.parametrize("style", STYLES)
def test_spans(style, tok):
    p = build_prompt(EX, style, tok)
    text, s = p.text, p.spans
    assert text[slice(*s["instruction"])] == INSTRUCTION
    assert text[slice(*s["documents"])] == DOCS
    assert text[slice(*s["question"])] == "Question: test question"
    assert s["context"] == (s["instruction"][0], s["documents"][1])
    assert [text[a:b] for a, b in p.doc_spans] == DOCS.split("\n")
    assert s["question"][0] >= s["context"][1]


def test_chat_template_style(tok):
    p = build_prompt(EX, "chat_template", tok)
    assert p.text == ("<|im_start|>user\n" + INSTRUCTION + "\n\n" + DOCS +
                      "\n\nQuestion: test question<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="plain"):
        build_prompt(EX, "chat_template", tiny_tokenizer())  # no chat template: a base model


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("which", ["tok", "bos_tok"])
def test_tokenize_prompt(style, which, request):
    tk = request.getfixturevalue(which)
    if style == "chat_template":
        tk.chat_template = CHATML
    p = build_prompt(EX, style, tk)
    ids, (c0, c1), q, docs = tokenize_prompt(p, tk)
    assert tk.decode(ids[c0:c1]) == INSTRUCTION + p.text[p.spans["instruction"][1]:p.spans["documents"][1]]
    assert tk.decode(ids[q:]).startswith("Question: test question")
    assert tk.decode(ids[c1:q]).strip() == ""
    assert (ids[0] == 1) == (which == "bos_tok") and ids.count(1) == (which == "bos_tok")
    for (a, b), (ca, cb) in zip(docs, p.doc_spans):  # each document line's tokens
        assert tk.decode(ids[a:b]).strip() == p.text[ca:cb]


def test_bos_not_doubled(bos_tok):
    p = build_prompt(EX, "plain")
    p = type(p)("<s>" + p.text, {k: (a + 3, b + 3) for k, (a, b) in p.spans.items()})
    ids, (c0, _), _, _ = tokenize_prompt(p, bos_tok)
    assert ids.count(1) == 1 and c0 == 1


def test_audit_reports_what_does_not_fit(tok):
    short = Example("s", "q", ("x",), (Doc("t", "short", True),), 0)
    ps = build_prompts([EX, short, EX], "plain")
    a = audit(ps, tok, max_len=300, reserve=32)
    assert a.lengths[0] > 300 - 32 > a.lengths[1]
    assert a.too_long == [0, 2] and a.max_len == 300
