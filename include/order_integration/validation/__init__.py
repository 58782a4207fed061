"""Order validation: Great Expectations 1.x suite (``suite.yaml``) and the valid / quarantine split.

Importing this package is cheap: pandas and GX are imported only when orders are validated.
"""

from order_integration.validation.frames import OrderFrames, build_frames
from order_integration.validation.gx_runner import (
    DEFAULT_SUITE_PATH,
    InvalidOrder,
    RuleSpec,
    ValidationOutcome,
    load_suite,
    quarantine_key,
    validate_orders,
)

__all__ = [
    "DEFAULT_SUITE_PATH",
    "InvalidOrder",
    "OrderFrames",
    "RuleSpec",
    "ValidationOutcome",
    "build_frames",
    "load_suite",
    "quarantine_key",
    "validate_orders",
]
