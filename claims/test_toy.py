"""§4, the controlled experiment: claims C4a (Fig. 1a) and C4b (Fig. 1b).

Select with ``pytest claims -k toy``; ``--profile paper`` trains App. A's configuration.
"""

import pytest

from fixtures.report import assert_supported


@pytest.mark.claims("C4a", "C4b", subject="toy")
def test_toy_claim(check, model, toy_runs, verify, settings):
    runs = toy_runs[check.params["setup"]]
    config = {**settings.profile.toy.to_dict(), "seeds": [r.seed for r in runs],
              "seconds": sum(r.seconds for r in runs)}
    assert_supported(verify(check, runs, config=config))
