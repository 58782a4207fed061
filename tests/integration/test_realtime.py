"""Real-time mode through the REAL components (issue 15): api-server with the package's plugin
(the webhook receiver), scheduler, dag-processor and triggerer (the inbox watcher), the
WooCommerce sandbox storefront and OpenSSH.

One Airflow start-up for the module (about a minute on 2 cores). The store is in
``mode: realtime`` with ``realtime_poll_seconds: 2``; DAGs are active from their first parse
(``dags_are_paused_at_creation`` off: the dag-processor registers an Asset's watcher only for an
active DAG, and re-parses a file only every 10 minutes here). The scheduled ``order_export__S``
therefore also makes its run of the wall clock's last hour, which holds none of these orders.

The burst: signed WooCommerce deliveries for 30 orders — all but a few of the store's paid
orders, one order still ``pending`` (not paid), one id the storefront does not have (deleted) —
with updates and exact duplicates mixed in, POSTed in parallel in five waves over ~8 seconds. Every paid order of the burst
must reach the SFTP inbound folder exactly once within a bounded time, in at most 3 real-time
runs; every inbox row is done. The paid orders no webhook announced (dropped webhooks) are then
delivered by a scheduled-window run of their hour — the safety net — which delivers nothing twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pendulum
import pytest
import requests

from order_integration.config import load_config
from order_integration.ledger import WebhookInbox, sqlite_engine
from order_integration.pools import pools_for
from sandbox.generator import generate_orders
from tests.support.airflow_run import migrate_airflow_db, sandbox_stores
from tests.support.airflow_services import LEAN_SETTINGS, LOCAL_COMPONENTS, AirflowServices, ServicesError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

DAY = pendulum.datetime(2026, 11, 2, tz="UTC")
EXPORTABLE = {"processing", "on-hold"}
SECRET = "rt-webhook-secret-51c2"
#: 48 orders modified between 10:00 and 11:00, in the generator's mix of statuses.
ORDERS = generate_orders(48, start=DAY.add(hours=10), end=DAY.add(hours=11), seed=29, first_id=5001)
PAID = [o["id"] for o in ORDERS if o["status"] in EXPORTABLE]
PENDING = next(o["id"] for o in ORDERS if o["status"] == "pending")
DELETED = 998_877
#: The burst's 30 orders: 28 paid, one pending (not paid yet), one the storefront no longer has.
BURST = [*PAID[:28], PENDING, DELETED]
#: Paid, but no webhook ever came for them (dropped): the safety net's.
DROPPED = [i for i in PAID if i not in BURST]
DELIVERED_WITHIN = 240.0  # seconds from the burst's last answer to the last paid order on SFTP


def _sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


def _delivery(order: dict, topic: str, delivery_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(order).encode()
    return body, {"Content-Type": "application/json", "X-WC-Webhook-Signature": _sign(body),
                  "X-WC-Webhook-Topic": topic, "X-WC-Webhook-Resource": "order",
                  "X-WC-Webhook-Event": topic.split(".")[1], "X-WC-Webhook-ID": "17",
                  "X-WC-Webhook-Delivery-ID": delivery_id}


def _wait(condition, timeout: float, what: str, services: AirflowServices, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ServicesError(f"{what}: not within {timeout:.0f}s\n{services.diagnostics()}")
        time.sleep(poll)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, sshd):
    home = tmp_path_factory.mktemp("realtime_home")
    migrate_airflow_db(home)  # also the default ledger, $AIRFLOW_HOME/order_ledger.db
    with sandbox_stores(home, sshd, tmp_path_factory.mktemp("realtime_stores")) as make:
        harness, shop = make(ORDERS, mode="realtime", realtime_poll_seconds=2)
        env = {k: v for k, v in harness.env().items() if os.environ.get(k) != v}
        env[f"AIRFLOW_CONN_STOREFRONT_{harness.store_id.upper()}"] = json.dumps(
            {**harness.storefront_connection(), "extra": {"webhook_secret": SECRET}})
        env.update(LEAN_SETTINGS)
        env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"  # see the module docstring
        # One Fernet key for every component: the dag-processor encrypts the watcher trigger's
        # kwargs and the triggerer decrypts them. Without one, each component that finds no
        # airflow.cfg writes its own (a race at start-up), and the triggerer dies on the kwargs.
        env["AIRFLOW__CORE__FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
        realtime_dag = f"order_export_realtime__{harness.store_id}"
        with AirflowServices(home, env, LOCAL_COMPONENTS, dag_ids=[realtime_dag, harness.dag_id]) as services:
            services.api.ensure_pools(pools_for(load_config(harness.config_path).stores))
            yield {"harness": harness, "shop": shop, "services": services, "realtime_dag": realtime_dag,
                   "inbox": WebhookInbox(sqlite_engine(Path(home) / "order_ledger.db"))}


def _ids_in_files(harness) -> Counter:
    """How often each order id was delivered (one count per order and file)."""
    seen: Counter = Counter()
    for path in harness.inbound_files():
        if path.name.startswith("."):
            continue
        seen.update({row["order_id"] for row in harness.delivered_rows([path])})
    return seen


def _settled_runs(api, dag_id: str) -> list[dict] | None:
    runs = api.runs(dag_id)
    return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None


@pytest.fixture(scope="module")
def burst(deployment):
    """The triggerer watches the inbox; then the burst, and the runs it woke, until all settle."""
    d = deployment
    services, api, harness = d["services"], d["services"].api, d["harness"]
    triggerer_log = services.log_file("triggerer")
    _wait(lambda: "watching the webhook inbox" in triggerer_log.read_text(errors="replace"), 180,
          "the triggerer runs the inbox watcher", services)
    # the scheduled DAG's run of the wall clock's last hour (no orders there) settles first
    _wait(lambda: _settled_runs(api, harness.dag_id), 300, "the scheduled run of the last hour", services)

    url = f"{services.base_url}/order-integration/webhooks/{harness.store_id}"
    session = requests.Session()
    session.trust_env = False
    # Five waves two seconds apart (30 orders over ~8 s, as a busy shop's minute might bring):
    # the first poll that sees deliveries wakes a run, and what comes while it runs waits for
    # one more. The last wave repeats updates of the first wave's orders (already exported).
    waves: list[list[tuple[bytes, dict[str, str]]]] = [[] for _ in range(5)]
    for n, order_id in enumerate(BURST):
        order = d["shop"].get_order(order_id) or {"id": order_id, "status": "trash"}
        created = _delivery(order, "order.created", f"c-{n // 3}")  # shared ids, as WooCommerce's
        waves[n // 6].append(created)
        if n % 6 == 0:
            waves[n // 6].append(created)  # the storefront sent it twice
        if n < 6:
            waves[4].append(_delivery({**order, "customer_note": "edited"}, "order.updated", f"u-{n}"))
    deliveries = [one for wave in waves for one in wave]
    answers = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for i, wave in enumerate(waves):
            if i:
                time.sleep(2)
            answers += pool.map(lambda b_h: session.post(url, data=b_h[0], headers=b_h[1], timeout=60), wave)
    answered = time.monotonic()
    assert [a.status_code for a in answers] == [200] * len(deliveries), [a.text for a in answers if a.status_code != 200]

    wanted = {str(i) for i in BURST if i in PAID}
    _wait(lambda: wanted <= set(_ids_in_files(harness)), DELIVERED_WITHIN, "every paid order of the burst on SFTP",
          services)
    delivered = time.monotonic()
    runs = _wait(lambda: _settled_runs(api, d["realtime_dag"]) if not d["inbox"].waiting(harness.store_id)
                 else None, 300, "the real-time runs settle and the inbox is empty", services)
    print(f"burst: {len(deliveries)} deliveries in 5 waves answered in {answered - started:.1f}s; every paid order on SFTP "
          f"{delivered - answered:.1f}s after the last answer; {len(runs)} real-time run(s)")
    return {"deliveries": deliveries, "answers": answers, "runs": runs, "seconds": delivered - answered}


def test_the_burst_is_recorded_and_delivered_once_by_few_runs(deployment, burst):
    d, api = deployment, deployment["services"].api
    outcomes = Counter(a.json()["outcome"] for a in burst["answers"])
    assert outcomes["duplicate"] >= 1 and outcomes["recorded"] >= len(BURST)
    runs = burst["runs"]
    assert 1 <= len(runs) <= 3, [(r["dag_run_id"], r["state"]) for r in runs]
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], r["state"]) for r in runs]
    assert all(r["run_type"] == "asset_triggered" for r in runs)
    seen = _ids_in_files(d["harness"])
    burst_paid = {str(i) for i in BURST if i in PAID}
    assert {i: n for i, n in seen.items() if n != 1} == {}, "an order delivered twice"
    assert set(seen) == burst_paid, "only the burst's paid orders, each once"
    notes = [api.run(d["realtime_dag"], r["dag_run_id"])["note"] or "" for r in runs]
    worked = [n for n in notes if n]
    assert worked and all(n.startswith("realtime: ") and "order(s) from the webhook inbox; order export" in n
                          for n in worked), notes
    assert sum(int(n.split("realtime: ")[1].split(" ")[0]) for n in worked) >= len(BURST)


def test_every_inbox_row_is_done_by_a_realtime_run_whatever_the_outcome(deployment, burst):
    d = deployment
    rows = d["inbox"].rows(d["harness"].store_id)
    assert len(rows) >= len(BURST)
    run_ids = {r["dag_run_id"] for r in burst["runs"]}
    assert {r["done_by_run"] for r in rows} <= run_ids
    assert all(r["done_at"] is not None for r in rows)
    done_orders = {r["order_id"] for r in rows}
    assert {str(PENDING), str(DELETED)} <= done_orders  # not ready and deleted: done too
    summaries = [d["services"].api.xcom(d["realtime_dag"], r, "mark_done") for r in run_ids]
    summaries = [s for s in summaries if s]
    assert sum(s["not_ready"] for s in summaries) >= 1
    assert str(DELETED) in {i for s in summaries for i in s["not_found"]}


def test_the_scheduled_window_delivers_what_no_webhook_announced_and_nothing_twice(deployment, burst):
    d = deployment
    api, harness = d["services"].api, d["harness"]
    run_id = api.trigger(harness.dag_id, logical_date=DAY.add(hours=11).to_iso8601_string())
    assert api.wait_for_run(harness.dag_id, run_id, timeout=480) == "success"
    summary = api.xcom(harness.dag_id, run_id, "publish")
    assert (summary["window_start"], summary["window_end"]) == (
        DAY.add(hours=10).to_iso8601_string(), DAY.add(hours=11).to_iso8601_string())
    assert summary["delivered"] == len(DROPPED)
    assert summary["already_delivered"] == len(PAID) - len(DROPPED)
    seen = _ids_in_files(harness)
    assert {i: n for i, n in seen.items() if n != 1} == {}, "an order delivered twice"
    assert set(seen) == {str(i) for i in PAID}
