"""Domain errors.

The library never imports Airflow for its errors: tasks translate :class:`PermanentError`
into ``AirflowFailException`` (no retries: it will not fix itself) and let every other
exception go through Airflow's normal retry policy.
"""

from __future__ import annotations


class OrderIntegrationError(Exception):
    """Base class of every error this package raises on purpose."""


class PermanentError(OrderIntegrationError):
    """Retrying cannot help (bad credentials, refused host key, bad config)."""


class ConfigError(PermanentError):
    """The store config or a connection is malformed; the message names the key."""


class LedgerSchemaError(ConfigError):
    """The ledger has no schema, or an older one than this release needs: the deployment's
    migration step (``python -m order_integration ledger migrate``) has not run. Workers never
    create or alter tables, so retrying cannot help; the message names the command."""


class StorefrontError(OrderIntegrationError):
    """The storefront misbehaved in a way that may pass (5xx, 429, HTML or truncated body)."""


class StorefrontAuthError(PermanentError, StorefrontError):
    """The storefront refused the credentials or the certificate."""


class StorefrontRequestRejected(PermanentError, StorefrontError):
    """The storefront refused our request as malformed (400) or unknown (404, other 4xx):
    a bug in the request or a wrong base URL; retrying the same request cannot help."""


class BackendError(OrderIntegrationError):
    """The backend's SFTP server failed in a way that may pass."""


class BackendAuthError(PermanentError, BackendError):
    """The backend refused the credentials, or its host key is unknown or changed."""


class InvariantViolation(PermanentError):
    """A run's own counts do not add up: an order or a status line would be lost or doubled.
    A bug, never bad input; the run stops loudly instead of reporting success."""


class QuarantineRatioExceeded(PermanentError):
    """Too many orders of one run failed validation: smells of an API change, not of bad orders."""

    def __init__(self, store_id: str, quarantined: int, validated: int, max_ratio: float) -> None:
        self.store_id = store_id
        self.quarantined = quarantined
        self.validated = validated
        self.max_ratio = max_ratio
        ratio = quarantined / validated if validated else 0.0
        super().__init__(
            f"store {store_id}: {quarantined} of {validated} validated orders were quarantined "
            f"({ratio:.1%}), above max_quarantine_ratio {max_ratio:.1%}. The quarantine is recorded "
            "(see order_quarantine); check the storefront API for a change before releasing."
        )
