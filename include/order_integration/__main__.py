"""Operator command line: ``python -m order_integration …``.

* ``quarantine list --store S [--all] [--json]`` — what is quarantined and why;
* ``quarantine release --store S ORDER_ID…`` — re-validate and deliver fixed orders
  (triggers ``order_export_on_demand__S``; ``--print`` only shows the command);
* ``pools`` — the Airflow pools the DAGs use, as JSON for ``airflow pools import``;
* ``ledger migrate [--ledger-url URL]`` — create or upgrade the ledger's schema (idempotent;
  run once per release before the workers, which never create or alter tables).

The ledger is the ``order_ledger`` connection (else ``$AIRFLOW_HOME/order_ledger.db``), as
in the tasks; ``--ledger-url`` points at any SQLAlchemy URL instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from order_integration.config import load_config
from order_integration.exceptions import ConfigError
from order_integration.ids import MAX_ORDER_ID, parse_order_id


def _ledger(url: str | None) -> Any:
    from sqlalchemy import create_engine

    from order_integration.ledger import Ledger, engine_from_airflow

    return Ledger(create_engine(url) if url else engine_from_airflow())


def _quarantine_list(args: argparse.Namespace) -> int:
    from order_integration.quarantine import quarantine_table

    load_config().store(args.store)  # an unknown store is an error, not an empty list
    entries = _ledger(args.ledger_url).quarantine.entries(args.store, include_released=args.all)
    if args.json:
        print(json.dumps(entries, default=str, ensure_ascii=False, indent=1))
        return 0
    noun = "entry" if len(entries) == 1 else "entries"
    what = f"quarantine {noun} (released included)" if args.all else f"open quarantine {noun}"
    print(f"store {args.store}: {len(entries)} {what}")
    if entries:
        print(quarantine_table(entries))
        open_ids = sorted({e["order_id"] for e in entries if e.get("released_at") is None}, key=_order_key)
        if open_ids:
            print(f"\nonce fixed in the storefront: python -m order_integration quarantine release "
                  f"--store {args.store} {' '.join(open_ids)}")
    return 0


def _order_key(order_id: str) -> tuple[int, str]:
    number = parse_order_id(order_id)
    return (number, "") if number is not None else (0, order_id)


def _quarantine_release(args: argparse.Namespace) -> int:
    from order_integration.on_demand import MAX_ORDER_IDS
    from order_integration.quarantine import release_command

    load_config().store(args.store)
    bad = [i for i in args.order_ids if parse_order_id(i) is None]
    if bad:
        raise ConfigError(f"order ids are digits 0-9 (1 to {MAX_ORDER_ID}); refused: {', '.join(bad)}")
    if len(args.order_ids) > MAX_ORDER_IDS:
        raise ConfigError(f"at most {MAX_ORDER_IDS} order ids per run, got {len(args.order_ids)}")
    entries = _ledger(args.ledger_url).quarantine.entries(args.store, include_released=True)
    open_ids = {e["order_id"] for e in entries if e.get("released_at") is None}
    released = {e["order_id"] for e in entries} - open_ids
    for order_id in args.order_ids:
        key = str(parse_order_id(order_id))
        if key not in open_ids:
            why = "was released already" if key in released else "was never quarantined"
            print(f"warning: order {order_id} of store {args.store} {why}; the run exports it as it is "
                  "now (see `quarantine list`)", file=sys.stderr)
    command = release_command(args.store, args.order_ids)
    if args.print:
        print(command)
        return 0
    print(f"+ {command}", flush=True)
    import shlex

    return subprocess.call(shlex.split(command))


def _ledger_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy import create_engine

    from order_integration.ledger import engine_from_airflow, migrate

    engine = create_engine(args.ledger_url) if args.ledger_url else engine_from_airflow(migrate_default=False)
    try:
        print(migrate(engine).describe(engine.url.render_as_string(hide_password=True)))
    finally:
        engine.dispose()
    return 0


def _pools(_args: argparse.Namespace) -> int:
    from order_integration.pools import pools_for

    print(json.dumps(pools_for(load_config().stores), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m order_integration", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    quarantine = sub.add_parser("quarantine", help="list or release quarantined orders")
    qsub = quarantine.add_subparsers(dest="action", required=True)
    listing = qsub.add_parser("list", help="what is quarantined and why")
    listing.add_argument("--store", required=True)
    listing.add_argument("--all", action="store_true", help="include released entries")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--ledger-url", help="SQLAlchemy URL of the ledger (default: as the tasks)")
    listing.set_defaults(func=_quarantine_list)
    release = qsub.add_parser("release", help="re-validate and deliver orders fixed in the storefront")
    release.add_argument("--store", required=True)
    release.add_argument("order_ids", nargs="+", metavar="ORDER_ID")
    release.add_argument("--print", action="store_true", help="only print the airflow command")
    release.add_argument("--ledger-url", help="SQLAlchemy URL of the ledger (default: as the tasks)")
    release.set_defaults(func=_quarantine_release)
    pools = sub.add_parser("pools", help="pools of the configured stores, for `airflow pools import`")
    pools.set_defaults(func=_pools)
    ledger = sub.add_parser("ledger", help="the ledger's schema")
    lsub = ledger.add_subparsers(dest="action", required=True)
    ledger_migrate = lsub.add_parser(
        "migrate", help="create or upgrade the ledger's tables (once per release, before the workers)")
    ledger_migrate.add_argument("--ledger-url", help="SQLAlchemy URL of the ledger (default: as the tasks)")
    ledger_migrate.set_defaults(func=_ledger_migrate)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Output is for people: what the library logs for task logs (where the ledger is, …) is not.
    logging.getLogger("order_integration").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
