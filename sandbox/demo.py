"""``make demo``: both directions end to end on this machine, printing what happened.

Starts the sandbox storefront (seeded orders over the last three hours, two of them broken
on purpose) and the embedded SFTP server, exports the last three hourly windows with
``airflow dags test`` of the on-demand export DAG (the scheduled export's own tasks, for an
explicit window), re-runs the last window to show that nothing is delivered twice, prints the
files on the SFTP server and the quarantine; then the ERP simulator answers (bank transfers,
the demo's on-hold orders, wait for their money) and, at its next poll, books the bank
transfers as paid and refunds some of the orders it shipped (whole or one line);
``order_status_sync__demo`` applies both status files to the storefront, the demo shows a few
orders as the customer sees them, and the payments and refunds as the storefront now shows
them; one more export shows that our own status write-backs (payments and refunds included)
are not sent to the backend again. Last, the ERP drops a stock snapshot and a small update,
``inventory_sync__demo`` applies them, and the demo shows stock levels before and after for a
few SKUs. It stops what it started. Each ``airflow dags test`` is a process of its own, forked
from one that imported Airflow, pandas and GX once (``sandbox.warm_airflow``; set
``SANDBOX_COLD_AIRFLOW=1`` to start each from scratch instead).

No run it starts takes a logical date that a scheduled run or a backfill needs (see
:func:`_dags_test`), so a scheduler started on the same Airflow home afterwards runs
``order_export__demo``'s next window as usual.
State lives in ``.sandbox/`` and ``$AIRFLOW_HOME`` (both ignored by git) and is
reset at every start, so each demo tells the same story.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pendulum

from order_integration.config import load_config
from order_integration.dag_defaults import dag_ids
from order_integration.ledger import Ledger, sqlite_engine
from sandbox.erp_simulator import ErpReport, ErpSimulator, MoneyPolicy, StatusEvent
from sandbox.generator import generate_orders, make_invalid
from sandbox.sftp_server import EmbeddedSftpServer
from sandbox.storefront import SandboxStorefront, default_products
from sandbox.warm_airflow import run_airflow

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".sandbox"
# The summary lines hold no quotes; stopping at one keeps a match out of the XCom value's repr
# ("Returned value was: {..., 'note': 'order export ...'}"), which repeats the line.
SUMMARY = re.compile(r"order export \S+ \[[^'\"\n]*")
STATUS_SUMMARY = re.compile(r"status sync \S+: files=[^'\"\n]*")
INVENTORY_SUMMARY = re.compile(r"inventory sync \S+: files=[^'\"\n]*")
HOURS = 3
#: Longest one ``airflow dags test`` of the demo may take (they take seconds): a hung run ends
#: the demo with its log's tail instead of holding the terminal.
RUN_TIMEOUT = 600.0
#: The demo's ERP: every bank transfer is paid at its next poll; a third of the orders it
#: shipped are refunded at the poll after the shipment, half of those by one line.
DEMO_MONEY = MoneyPolicy(payment_share=1.0, payment_delay_runs=1, refund_share=0.3, line_refund_share=0.5,
                         refund_delay_runs=1)


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _dags_test(env: dict[str, str], dag_id: str, log_dir: Path, summary: re.Pattern[str], *,
               conf: dict[str, Any] | None = None) -> str:
    """``airflow dags test DAG`` (with ``conf`` for the on-demand DAG); returns the run's summary
    line, or exits with the log's tail.

    No run started here may take a logical date that a scheduled or backfill run needs: Airflow
    keys runs by logical date, so such a run would block the schedule for good (and ``dags test``
    deletes a run already at its date). Windows therefore go through the on-demand DAG, which
    has no schedule; the sync DAGs run at a logical date with a sub-minute part, which no cron
    tick (whole minutes) can ever take."""
    now = pendulum.now("UTC")
    when = now.add(microseconds=1) if now.second == 0 and now.microsecond == 0 else now
    log_file = log_dir / f"{dag_id}_{when.strftime('%Y%m%dT%H%M%S%fZ')}.log"
    args = ["dags", "test", dag_id, when.isoformat()]
    if conf is not None:
        args += ["--conf", json.dumps(conf)]
    started = time.monotonic()
    # a process of its own, forked from one that imported Airflow, pandas and GX once
    code, text = run_airflow(args, env, RUN_TIMEOUT, log=log_file)
    found = summary.findall(text)
    took = time.monotonic() - started
    if code != 0 or not found:
        tail = "\n".join(text.splitlines()[-25:])
        raise SystemExit(f"{dag_id} failed (exit {code}); log: {log_file}\n{tail}")
    return f"{found[-1]}  ({took:.0f}s, log {_shown_path(log_file)})"


def _shown_path(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def export_window(env: dict[str, str], store_id: str, start: pendulum.DateTime, end: pendulum.DateTime,
                  log_dir: Path) -> str:
    """Export the window ``[start, end)`` by hand, exactly as a scheduled run of it would: the
    on-demand DAG's window form (same tasks, same ledger), leaving the scheduled
    ``order_export__<store>`` every logical date it needs."""
    conf = {"start": start.to_iso8601_string(), "end": end.to_iso8601_string()}
    return _dags_test(env, f"order_export_on_demand__{store_id}", log_dir, SUMMARY, conf=conf)


def run_sync(env: dict[str, str], dag_id: str, log_dir: Path) -> str:
    """One run of a status or inventory sync DAG (they read whatever files wait, not a window)."""
    pattern = INVENTORY_SUMMARY if dag_id.startswith("inventory_sync__") else STATUS_SUMMARY
    return _dags_test(env, dag_id, log_dir, pattern)


def stack_in_the_way(state_dir: Path | None = None) -> str | None:
    """One sentence when a ``make up`` stack is running, else None. The demo resets the demo
    store's ledger and runs in the Airflow home that stack's scheduler works in: both at once
    would race (the scheduler running the very windows the demo is exporting)."""
    from sandbox import stack

    up = stack.running_stack(state_dir or stack.STATE)
    if up is None:
        return None
    return (f"make demo: a `make up` stack is running (pid {up['pid']}, {up['url']}, since {up['since']}); "
            "the demo resets the demo store's ledger and runs in the Airflow home its scheduler uses. "
            "Stop it first with `make down`, then run `make demo` again.")


def main() -> int:
    """``make demo``: the story below, unless a ``make up`` stack is in the way."""
    if (refused := stack_in_the_way()) is not None:
        print(refused, file=sys.stderr)
        return 1
    return _demo()


def _demo() -> int:
    # The demo prints its own story; library and SSH chatter stays in the task logs.
    for noisy in ("paramiko", "sandbox", "order_integration", "asyncssh"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    store = load_config().store("demo")
    airflow_home = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".airflow"))
    for stale in (STATE / "sftp", STATE / "logs", airflow_home / "order_staging"):
        shutil.rmtree(stale, ignore_errors=True)
    for db in airflow_home.glob("order_ledger.db*"):
        db.unlink()
    forget_earlier_runs(store.id)
    log_dir = STATE / "logs"
    log_dir.mkdir(parents=True)

    last_end = pendulum.now("UTC").start_of("hour")
    first_start = last_end.subtract(hours=HOURS)
    orders = generate_orders(180, start=first_start, end=last_end, seed=42)
    broken = {5: "total_mismatch", 77: "bad_email"}
    for index, kind in broken.items():
        orders[index] = make_invalid(orders[index], kind)
    for order in orders:
        if order["status"] == "on-hold":
            awaiting_bank_transfer(order)

    _banner("starting the sandbox storefront and the embedded SFTP server")
    key, secret = "ck_demo_0123456789", "cs_demo_0123456789"
    with (
        SandboxStorefront(orders, consumer_key=key, consumer_secret=secret,
                          products=default_products()) as shop,
        EmbeddedSftpServer(STATE / "sftp", STATE / "keys") as sftp,
    ):
        print(f"storefront  {shop.base_url}  ({len(orders)} orders modified in "
              f"[{first_start.to_iso8601_string()}, {last_end.to_iso8601_string()}); "
              f"orders {', '.join(str(orders[i]['id']) for i in broken)} broken on purpose)")
        print(f"sftp        127.0.0.1:{sftp.port}  (host key pinned: {sftp.host_key[:32]}…)")
        env = {
            **os.environ,
            "GX_ANALYTICS_ENABLED": "False",
            f"AIRFLOW_CONN_{store.storefront_conn_id.upper()}": json.dumps({
                "conn_type": "http", "host": shop.base_url,
                "login": key, "password": secret}),
            f"AIRFLOW_CONN_{store.backend_conn_id.upper()}": json.dumps(sftp.airflow_connection()),
        }

        _banner(f"exporting the last {HOURS} hourly windows (airflow dags test order_export_on_demand__demo)")
        for hour in range(HOURS):
            start = first_start.add(hours=hour)
            print(export_window(env, store.id, start, start.add(hours=1), log_dir), flush=True)
        _banner("re-running the last window: nothing may be delivered twice")
        print(export_window(env, store.id, last_end.subtract(hours=1), last_end, log_dir), flush=True)
        _report(store.backend.inbound_dir, airflow_home)

        _banner("the ERP simulator answers over SFTP (accepted, shipped, rejected, cancelled; "
                "bank transfers wait for their money)")
        os.environ[f"AIRFLOW_CONN_{store.backend_conn_id.upper()}"] = env[
            f"AIRFLOW_CONN_{store.backend_conn_id.upper()}"]
        erp = ErpSimulator(store.backend_conn_id, inbound_dir=store.backend.inbound_dir,
                           outbound_dir=store.backend.outbound_dir, stock_dir=store.backend.stock_dir, seed=7,
                           money=DEMO_MONEY)
        story = erp_polls(erp)
        for line in story.lines:
            print(line)

        _banner("running order_status_sync__demo (airflow dags test): both status files")
        print(run_sync(env, f"order_status_sync__{store.id}", log_dir), flush=True)
        _show_storefront(shop, erp_orders=[int(o["id"]) for o in orders])
        _banner("payments and refunds as the storefront shows them now")
        for line in storefront_money_lines(shop, story):
            print(line)

        _banner("exporting the current hour so far: our own status write-backs are not sent back")
        now = pendulum.now("UTC").start_of("second")  # the demo has run for minutes: after last_end
        files_before = _files_now(STATE / "sftp" / store.backend.inbound_dir)
        print(export_window(env, store.id, last_end, now, log_dir), flush=True)
        ledger = Ledger(sqlite_engine(airflow_home / "order_ledger.db"), create=False)
        new_files = sorted(_files_now(STATE / "sftp" / store.backend.inbound_dir) - files_before)
        inbound = STATE / "sftp" / store.backend.inbound_dir
        for line in echo_lines(ledger, store.id, story, [inbound / n for n in new_files],
                               read_by_erp=STATE / "sftp" / erp.processed_dir):
            print(line)

        _banner("the ERP drops a stock snapshot and a small update; inventory_sync__demo applies them")
        before = shop.stock_levels()
        report = erp.write_stock("snapshot")
        erp.clock = lambda: pendulum.now("UTC").add(seconds=1)  # the update is newer than the snapshot
        update = erp.write_stock("update", changes=3)
        for line in report.lines() + update.lines():
            print(line)
        print(run_sync(env, f"inventory_sync__{store.id}", log_dir), flush=True)
        _show_stock(shop, before, [sku for sku, _q in update.rows] + [sku for sku, _q in report.rows][:4])
    _banner("stopped the storefront and the SFTP server")
    return 0


def awaiting_bank_transfer(order: dict[str, Any]) -> dict[str, Any]:
    """Make ``order`` what WooCommerce makes of a bank transfer checkout: ``on-hold``, paid by
    ``bacs``, no payment date or transaction yet (the generator draws the payment method apart
    from the status)."""
    order.update(status="on-hold", payment_method="bacs", payment_method_title="Direct bank transfer",
                 transaction_id="", date_paid=None, date_paid_gmt=None)
    return order


@dataclass
class MoneyStory:
    """What the ERP did in the demo's two polls: its printed lines, the orders it held for their
    payment, and the ``paid`` and ``refunded`` lines it wrote."""

    lines: list[str] = field(default_factory=list)
    awaiting: int = 0
    payments: list[StatusEvent] = field(default_factory=list)
    refunds: list[StatusEvent] = field(default_factory=list)
    reports: list[ErpReport] = field(default_factory=list)

    def shown_refunds(self) -> tuple[list[StatusEvent], list[StatusEvent]]:
        """The refunds the demo shows: the first whole one and the first by line (each if any)."""
        return [e for e in self.refunds if not e.sku][:1], [e for e in self.refunds if e.sku][:1]


def erp_polls(erp: ErpSimulator) -> MoneyStory:
    """Two polls of the ERP, as its loop would make them a few seconds apart: the first answers
    the orders files (holding bank transfers), the second books what is due by then (the
    payments of the orders held, refunds of orders shipped at the first). One status file each;
    the status sync applies them in name order, so the refunds come after the shipments."""
    story = MoneyStory()
    for _poll in range(2):
        report = erp.run_once()
        story.reports.append(report)
        story.lines += report.lines()
        story.awaiting += sum(f.awaiting_payment for f in report.files)
        story.payments += report.payments
        story.refunds += report.refunds
    return story


def _money(amount: str, currency: str) -> str:
    return f"{amount} {currency}"


def storefront_money_lines(shop: SandboxStorefront, story: MoneyStory) -> list[str]:
    """A paid bank transfer and a whole and a line refund, read back from the storefront."""
    out: list[str] = []
    paid = sorted(story.payments, key=lambda e: int(e.order_id))
    whole, by_line = story.shown_refunds()
    if not paid:
        out.append("no payment booked (no order awaited one)")
    for line in paid[:1]:
        order = shop.get_order(int(line.order_id)) or {}
        out.append(f"order {line.order_id} ({order.get('payment_method_title')}): "
                   f"the ERP booked {_money(line.amount, line.currency)} (reference {line.reference}); "
                   f"now status {order.get('status')}, transaction_id {order.get('transaction_id')}, "
                   f"date_paid {order.get('date_paid_gmt')}")
        for note in shop.notes(int(line.order_id)):
            kind = "customer note" if note.get("customer_note") else "private note"
            out.append(f"    {kind}: {note['note']}")
    if len(paid) > 1:
        out.append(f"... and {len(paid) - 1} more bank transfer(s) paid the same way")
    if not story.refunds:
        out.append("no refund booked (nothing was shipped at the ERP's first poll)")
    for line in whole + by_line:
        order = shop.get_order(int(line.order_id)) or {}
        for refund in shop.refunds(int(line.order_id)):
            reference = next((m["value"] for m in refund.get("meta_data") or []
                              if m.get("key") == "order_integration_reference"), "")
            items = ", ".join(f"{li['sku']} x{-li['quantity']}" for li in refund.get("line_items") or [])
            gateway = "yes" if refund["refunded_payment"] else "no"
            out.append(f"order {line.order_id}: refund {refund['amount']} {order.get('currency')} "
                       f"({'lines ' + items if items else 'whole order'}), reason {refund['reason']!r}, "
                       f"credit note {reference}, through the gateway: {gateway}; "
                       f"order total {order.get('total')}, status {order.get('status')}")
    if len(story.refunds) > len(whole + by_line):
        out.append(f"... and {len(story.refunds) - len(whole + by_line)} more refund(s)")
    return out


def _files_now(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def _rows_of(paths: Iterable[Path]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in paths:
        rows += csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
    return rows


def echo_lines(ledger: Ledger, store_id: str, story: MoneyStory, new_files: list[Path],
               read_by_erp: Path) -> list[str]:
    """Whether a paid and two refunded orders went out again, from the ledger and the files: the
    status each was delivered with before (the orders files the ERP read), the deliveries the
    ledger holds, and whether the export's ``new_files`` hold the order."""
    sent_now = {r["order_id"] for r in _rows_of(new_files)}
    deliveries = Counter(row["order_id"] for row in ledger.deliveries.delivered(store_id))
    files = sorted(read_by_erp.iterdir()) if read_by_erp.exists() else []
    before: dict[str, set[str]] = {}
    for row in _rows_of(files):
        before.setdefault(row["order_id"], set()).add(row["order_status"])
    paid = {e.order_id for e in story.payments}
    whole, by_line = story.shown_refunds()
    shown = sorted(paid, key=int)[:1] + [e.order_id for e in whole + by_line]
    out = []
    for order_id in dict.fromkeys(shown):
        what = "paid by the ERP" if order_id in paid else "refunded by the ERP"
        again = ("sent again" if order_id in sent_now else
                 "not sent again (nothing of its exported content changed but what the status sync wrote)")
        earlier = "/".join(sorted(before.get(order_id, ()))) or "?"
        out.append(f"order {order_id} ({what}): sent before as {earlier}, "
                   f"{deliveries[order_id]} delivery(ies) in the ledger; this export: {again}")
    return out


def forget_earlier_runs(store_id: str, *, orphaned: bool = False) -> None:
    """Earlier demos' runs of the store's DAGs go with the rest of the demo's state, so each
    demo starts from the same point; this also clears a run that an older demo left at a
    logical date the schedule needs (before 2026-12-04 it ran ``dags test order_export__demo``
    at window ends), which would block the schedule for good.

    ``orphaned``: the caller knows nothing runs in this Airflow home (``make up`` checked that no
    stack is up), so task instances still marked running were left by a stack stopped mid-task
    (its scheduler and workers are gone): they are marked failed first, since Airflow refuses
    to delete a DAG with running tasks."""
    from airflow.api.common.delete_dag import delete_dag
    from airflow.exceptions import DagNotFound

    # set after the import: importing Airflow sets its loggers up
    logging.getLogger("airflow.api.common.delete_dag").setLevel(logging.WARNING)
    if orphaned:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import update

        with create_session() as session:
            session.execute(update(TaskInstance).where(
                TaskInstance.dag_id.in_(dag_ids(store_id)), TaskInstance.state == TaskInstanceState.RUNNING,
            ).values(state=TaskInstanceState.FAILED).execution_options(synchronize_session=False))
    for dag_id in dag_ids(store_id):
        with contextlib.suppress(DagNotFound):
            delete_dag(dag_id)


def _show_storefront(shop: SandboxStorefront, erp_orders: list[int]) -> None:
    """What a customer now sees for a few orders: status and the notes we added."""
    _banner("what the storefront shows now (a few orders)")
    shown: dict[str, int] = {}
    for order_id in erp_orders:
        order = shop.get_order(order_id)
        notes = shop.notes(order_id)
        if not order or not notes or shown.get(order["status"], 0) >= 2:
            continue
        shown[order["status"]] = shown.get(order["status"], 0) + 1
        print(f"order {order_id}: status {order['status']}")
        for note in notes:
            kind = "customer note" if note.get("customer_note") else "private note"
            print(f"    {kind}: {note['note']}")


def _show_stock(shop: SandboxStorefront, before: dict[str, int | None], skus: list[str]) -> None:
    """Stock levels on the storefront before and after the inventory sync, for a few SKUs."""
    _banner("stock levels on the storefront (before -> after)")
    after = shop.stock_levels()
    for sku in dict.fromkeys(skus):
        print(f"{sku:<12} {before.get(sku)!s:>4} -> {after.get(sku)!s:<4}")


def _report(inbound_dir: str, airflow_home: Path) -> None:
    _banner(f"files on the SFTP server in {inbound_dir}/")
    inbound = STATE / "sftp" / inbound_dir
    delivered = 0
    for path in sorted(inbound.iterdir()):
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
        statuses = Counter(r["order_status"] for r in {r["order_id"]: r for r in rows}.values())
        n_orders = len({r["order_id"] for r in rows})
        delivered += n_orders
        print(f"{path.name}: {n_orders} orders, {len(rows)} lines ({dict(statuses)})")
    print(f"total: {delivered} orders delivered")

    _banner("quarantine (order_quarantine in the ledger)")
    ledger = Ledger(sqlite_engine(airflow_home / "order_ledger.db"), create=False)
    for entry in ledger.quarantine.entries("demo"):
        reasons = "; ".join(f"{r['rule']}: {r['detail']}" for r in entry["reasons"])
        print(f"order {entry['order_id']} (version {entry['order_version']}): {reasons}")


if __name__ == "__main__":
    sys.exit(main())
