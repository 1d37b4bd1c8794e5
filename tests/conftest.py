import os

from hypothesis import HealthCheck, settings

# CI runs a fixed set of examples so a run is repeatable; locally, new ones each time.
# Function-scoped fixtures in hypothesis tests only pin a kernel for the whole
# test (test_conv2d's `backend`), which every example may share.
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=_SUPPRESS)
settings.register_profile("dev", deadline=None, print_blob=True,
                          suppress_health_check=_SUPPRESS)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
