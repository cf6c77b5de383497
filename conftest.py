"""ropedim's pytest plugins: options, session fixtures and the claim report."""

import os

from hypothesis import settings

pytest_plugins = [
    "fixtures.options",  # --model, --profile, ... and the session settings
    "fixtures.toy",  # trained toys (§4)
    "fixtures.devices",  # one GPU per xdist worker; -n auto = one worker per GPU
    "fixtures.models",  # models by alias
    "fixtures.qa",  # one model on one QA task (§5)
    "fixtures.parametrize",  # claim tests generated from the claims table
    "fixtures.schedule",  # xdist groups
    "fixtures.verify",  # measure -> verdict -> record -> assert the expected outcome
    "fixtures.report",  # the report, written by the controller
]

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_configure(config):
    # `-n N` schedules by xdist group (fixtures/schedule.py: one group per shared artifact)
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
        # workers keep torch's threads (one per core) but sleep instead of spinning while
        # they wait: several busy workers then share the cores without slowing each other
        # down, and a worker left alone still uses every core (measured in the issue note)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
