"""Real-time mode fed by polling (issue 15, item 5) through the REAL components: api-server,
scheduler, dag-processor and triggerer (the ``StorefrontPollTrigger`` watcher), the WooCommerce
sandbox storefront (which sends no webhook at all) and OpenSSH.

One store, ``mode: realtime`` with ``realtime_source: polling`` and ``realtime_poll_seconds: 2``.
Orders are placed in the storefront in two waves (the second while the first may still be
exporting); every paid one must reach the SFTP inbound folder exactly once through asset-triggered
runs whose notes say ``from the storefront poll``; the orders not paid are not delivered; every
inbox row (topic ``poll``, one per order modification) is done, and the store's cursor is in the
ledger. Its own Airflow start-up (~30-60 s): ``test_realtime.py``'s module was being extended by
another change when this was written, so this store could not join its stack then.
"""

from __future__ import annotations

import base64
import os
import time
from collections import Counter
from pathlib import Path

import pendulum
import pytest

from order_integration.config import load_config
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.pools import pools_for
from sandbox.generator import generate_orders
from tests.support.airflow_run import migrate_airflow_db, sandbox_stores
from tests.support.airflow_services import (
    LEAN_SETTINGS,
    LOCAL_COMPONENTS,
    AirflowServices,
    cmdline,
    descendants,
    preloaded,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

EXPORTABLE = {"processing", "on-hold"}
DELIVERED_WITHIN = 240.0


def _placed_now(n: int, seed: int, first_id: int) -> list[dict]:
    """``n`` new orders modified in the last few seconds (the poll reads back from its cursor)."""
    now = pendulum.now("UTC")
    return generate_orders(n, start=now.subtract(seconds=5), end=now, seed=seed, first_id=first_id)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, sshd):
    home = tmp_path_factory.mktemp("polling_home")
    migrate_airflow_db(home)
    with sandbox_stores(home, sshd, tmp_path_factory.mktemp("polling_stores")) as make:
        harness, shop = make([], mode="realtime", realtime_source="polling", realtime_poll_seconds=2)
        env = {k: v for k, v in harness.env().items() if os.environ.get(k) != v}
        env.update(LEAN_SETTINGS)
        env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"  # the watcher starts at first parse
        env["AIRFLOW__CORE__FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
        dag_id = f"order_export_realtime__{harness.store_id}"
        with AirflowServices(home, env, LOCAL_COMPONENTS, dag_ids=[dag_id]) as services:
            services.api.ensure_pools(pools_for(load_config(harness.config_path).stores))
            yield {"harness": harness, "shop": shop, "services": services, "dag": dag_id,
                   "ledger": Ledger(sqlite_engine(Path(home) / "order_ledger.db"))}


def _ids_in_files(harness) -> Counter:
    seen: Counter = Counter()
    for path in harness.inbound_files():
        if not path.name.startswith("."):
            seen.update({row["order_id"] for row in harness.delivered_rows([path])})
    return seen


def test_orders_placed_without_webhooks_reach_sftp_once_through_the_poll(deployment):
    d = deployment
    harness, shop, services, api = d["harness"], d["shop"], d["services"], d["services"].api
    triggerer_log = services.log_file("triggerer")
    wait_until(lambda: f"store {harness.store_id}: polling the storefront" in triggerer_log.read_text(errors="replace"),
          180, "the triggerer runs the storefront poll", services)
    first = _placed_now(10, seed=43, first_id=8001)
    shop.add_orders(first)
    time.sleep(6)  # a few polls later: the first wave is found, maybe already exporting
    second = _placed_now(10, seed=47, first_id=8101)
    shop.add_orders(second)
    placed = first + second
    paid = {str(o["id"]) for o in placed if o["status"] in EXPORTABLE}
    assert paid and len(paid) < len(placed)
    wait_until(lambda: paid <= set(_ids_in_files(harness)), DELIVERED_WITHIN, "every paid order on SFTP", services)

    inbox = d["ledger"].webhook_inbox

    def settled():
        runs = api.runs(d["dag"])
        done = runs and all(r["state"] in ("success", "failed") for r in runs)
        return runs if done and not inbox.waiting(harness.store_id) else None

    runs = wait_until(settled, 300, "the real-time runs settle and the inbox is empty", services)
    assert all(r["state"] == "success" and r["run_type"] == "asset_triggered" for r in runs), runs
    assert len(runs) <= 6, [r["dag_run_id"] for r in runs]
    seen = _ids_in_files(harness)
    assert dict(seen) == dict.fromkeys(paid, 1), "each paid order once, nothing else"
    rows = inbox.rows(harness.store_id)
    assert {r["topic"] for r in rows} == {"poll"}
    assert {r["order_id"] for r in rows} == {str(o["id"]) for o in placed}
    assert all(r["done_at"] is not None for r in rows)
    assert d["ledger"].poll_cursors.get(harness.store_id) > pendulum.now("UTC").subtract(minutes=5)
    notes = [api.run(d["dag"], r["dag_run_id"])["note"] or "" for r in runs]
    worked = [n for n in notes if n]
    assert worked and all(n.startswith("realtime: ") and "order(s) from the storefront poll; order export" in n
                          for n in worked), notes
    print(f"polling: {len(placed)} orders placed in two waves, {len(paid)} paid on SFTP once, {len(runs)} run(s)")

    # the tasks forked from workers that hold the package's preload (GX, pandas), so none of
    # them imported GX itself (sandbox/airflow_services.py: forkserver + preload)
    scheduler = services.procs["scheduler"].pid
    workers = [pid for pid in descendants(scheduler)
               if b"LocalExecutor" in cmdline(pid)]
    assert workers and all(preloaded(pid) for pid in workers), workers
    assert not preloaded(scheduler), "the scheduler itself stays light: only its forkserver imports"

