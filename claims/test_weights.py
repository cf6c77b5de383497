"""§5, claim C5a (Fig. 2a, Fig. 5): W_q row norms grow with θ rank.

Runs on every ``--model`` (default smollm2); ``pytest claims -k C5a --model gemma3``.
"""

import pytest

from fixtures.report import assert_supported


@pytest.mark.claims("C5a")
def test_wq_claim(check, model, load_model, verify):
    loaded = load_model(model)
    if check.params["scaled"] and loaded.anatomy.q_norm_scale is None:
        pytest.skip(f"{model} has no q_norm before RoPE: the scaled check is the raw one")
    config = {"model": model, "source": loaded.source, "layers": loaded.anatomy.n_layers,
              "heads": loaded.anatomy.n_heads, "head_dim": loaded.anatomy.head_dim,
              "seconds": loaded.load_seconds}
    assert_supported(verify(check, loaded, model=model, config=config))
