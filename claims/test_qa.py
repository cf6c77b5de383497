"""§5.2-5.4 on multi-document QA: utility (C5b, C5c), retrieval heads (C5d, Fig. 4) and
masked retrieval heads (C5e, C5f), on every ``--model`` and on both tasks (the project's
synthetic retrieval task and NQ-open).
"""

import pytest

from fixtures.report import assert_supported


@pytest.mark.claims("C5b", "C5c", "C5d", "C-Fig4", "C5e", "C5f")
def test_qa_claim(check, model, study, verify):
    s = study(model, check.params["task"])
    assert_supported(verify(check, s, model=model, config=s.describe()))
