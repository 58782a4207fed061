"""Real-time mode's polling fallback, in Airflow's triggerer: the storefront polled into the inbox.

A store in ``mode: realtime`` with ``realtime_source: polling`` gets this trigger on its inbox
Asset's ``AssetWatcher`` instead of :class:`~order_integration.inbox_trigger.WebhookInboxTrigger`.
Every ``poll_seconds`` it first asks the storefront for the orders modified since the stored
cursor and writes them to the webhook inbox as deliveries of topic ``poll``
(:mod:`order_integration.polling`), then does exactly what the inbox trigger does: fires when
deliveries newer than the last signalled wait. So the run, the ledger and everything after the
inbox are the webhook path's, unchanged.

Deferrable by construction: a trigger holds no worker slot. Every storefront request and ledger
query runs in a worker thread (``asyncio.to_thread``), never on the triggerer's event loop. A
storefront that cannot be read is a warning (the first, then one per ``WARN_EVERY`` failed
polls) and the inbox is still watched: rows of a failed run are signalled again as ever.

Imported by the DAG file at parse time: the standard library and the inbox trigger only; the
storefront client, the ledger and the store config are imported in the worker thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from order_integration.inbox_trigger import RESIGNAL_SECONDS, WARN_EVERY, WebhookInboxTrigger

if TYPE_CHECKING:
    from order_integration.ledger import WebhookInbox
    from order_integration.polling import StorefrontPoller

log = logging.getLogger(__name__)


class StorefrontPollTrigger(WebhookInboxTrigger):
    """Polls the store's storefront for modified orders into its webhook inbox, and fires like
    :class:`WebhookInboxTrigger` (same kwargs, same event payload)."""

    watching = "polling the storefront for modified orders and watching the webhook inbox"

    def __init__(self, *, store_id: str, poll_seconds: float = 5.0,
                 resignal_seconds: float = RESIGNAL_SECONDS) -> None:
        super().__init__(store_id=store_id, poll_seconds=poll_seconds, resignal_seconds=resignal_seconds)
        self._poller: StorefrontPoller | None = None
        self._poller_inbox: WebhookInbox | None = None
        self._failures = 0

    def open_poller(self, inbox: WebhookInbox) -> StorefrontPoller:
        """The store's poller over ``inbox`` (tests give their own); called in a worker thread."""
        from order_integration.polling import open_poller

        return open_poller(self.store_id, inbox)

    def check(self, inbox: WebhookInbox) -> tuple[int, int]:
        try:
            if self._poller is None or self._poller_inbox is not inbox:
                self._poller, self._poller_inbox = self.open_poller(inbox), inbox
            scan = self._poller.poll()
        except Exception as exc:  # storefront down, refused, or the ledger: poll again, lose nothing
            self._poller = None  # a new client next time (a changed connection, a restarted store)
            self._failures += 1
            if self._failures % WARN_EVERY == 1:
                log.warning("store %s: storefront poll failed (%s: %s); the cursor stays, polling again "
                            "every %gs (%d failed poll(s) so far)", self.store_id, type(exc).__name__,
                            str(exc).splitlines()[0][:300] if str(exc) else "", self.poll_seconds,
                            self._failures)
        else:
            if self._failures:
                log.info("store %s: storefront readable again after %d failed poll(s)", self.store_id,
                         self._failures)
                self._failures = 0
            if scan.recorded:
                log.info("store %s: storefront poll [%s, %s): %d order(s) modified, %d new in the inbox",
                         self.store_id, scan.start.isoformat(), scan.end.isoformat(), scan.orders,
                         scan.recorded)
        return super().check(inbox)
