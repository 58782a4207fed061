"""Hypothesis profiles of the fuzz tier (issue 13).

``HYPOTHESIS_PROFILE`` picks one: ``ci`` (the default: what a plain ``pytest`` / ``make test``
runs, a few seconds per property) or ``long`` (``make fuzz``: minutes, figures in
docs/reliability.md). Neither keeps an example database in the repository: a failure prints
its ``@reproduce_failure`` blob and the shrunk example, which goes into the test as an
``@example`` once fixed.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "database": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}

settings.register_profile("ci", max_examples=150, **_COMMON)
settings.register_profile("long", max_examples=4_000, **_COMMON)  # ~4 min in all on 2 cores
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
