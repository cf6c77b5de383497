"""The claim tests, one function per subject type; ``fixtures/parametrize.py`` runs each
over every check of its subject in the claims table (and every ``--model``). Select with
``-k``: ``-k toy`` (§4), ``-k C5e``, ``-k smollm2``, ``-k nq``.
"""

import pytest

from claims.checks import QA, SUBJECTS, Identity, Toy, Weights
from ropedim.models import slug


@pytest.mark.subject.with_args(Identity)
def test_identity_claim(check, verify):
    """§2, Eq. 2: RoPE's score depends on positions only through n − m (C2)."""
    verify(check, None, "rope", {})


@pytest.mark.subject.with_args(Toy)
def test_toy_claim(check, toy_runs, verify, settings):
    """§4, the controlled experiment (C4a, C4b); ``--profile paper`` trains App. A's configuration."""
    runs = [r for by_setup in toy_runs.values() for rs in by_setup.values() for r in rs]
    config = {**settings.profile.toy.to_dict(), "seeds": list(settings.profile.toy_seeds),
              "inits": list(settings.profile.toy_inits)}
    verify(check, toy_runs, "toy", config, seconds=sum(r.seconds for r in runs))


@pytest.mark.subject.with_args(Weights)
def test_weights_claim(check, model, load_model, verify):
    """§5, the model's weights (C5a)."""
    loaded = load_model(model)
    verify(check, loaded, slug(model), loaded.describe(), seconds=loaded.load_seconds)


@pytest.mark.subject.with_args(QA)
def test_qa_claim(check, model, study, verify):
    """§5.2-5.4 on multi-document QA (C5b-C5f, Fig. 4)."""
    s = study(model, check.subject.task)
    verify(check, s, slug(model), {**s.loaded.describe(), **s.describe()})


# every subject type of the table has its test: a check cannot go uncollected
_TESTED = {m.args[0] for f in (test_identity_claim, test_toy_claim, test_weights_claim, test_qa_claim)
           for m in getattr(f, "pytestmark", []) if m.name == "subject"}
if set(SUBJECTS) - _TESTED:
    raise TypeError(f"claim subjects without a test: {[s.__name__ for s in set(SUBJECTS) - _TESTED]}")
