"""ropedim's pytest plugins: options, session fixtures and the claim report."""

import os

from hypothesis import settings

pytest_plugins = [
    "fixtures.options",
    "fixtures.toy",
    "fixtures.models",
    "fixtures.study",
    "fixtures.report",
]

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_configure(config):
    # xdist workers share the machine's cores: one torch thread each avoids oversubscription
    if hasattr(config, "workerinput"):
        import torch
        torch.set_num_threads(1)
