"""Shared test configuration.

Hypothesis profiles, picked by ``STATESAGA_HYPOTHESIS_PROFILE``:

- ``dev`` (default): 100 examples, for the edit-test loop;
- ``ci`` (default when ``CI=true``): 300 examples, prints a reproduction blob;
- ``quick``: 25 examples, for a fast smoke run.

No profile has a deadline: generated sagas vary in size, and a slow CI
machine must not turn that into flaky ``DeadlineExceeded`` failures.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=False, print_blob=True)
settings.register_profile("quick", max_examples=25, deadline=None)


def _hypothesis_profile() -> str:
    default = "ci" if os.environ.get("CI", "").strip().lower() == "true" else "dev"
    return os.environ.get("STATESAGA_HYPOTHESIS_PROFILE", default)


settings.load_profile(_hypothesis_profile())
