"""``make up`` / ``make down``: the sandbox store and a real Airflow on this machine, until Ctrl-C.

``make up`` starts, on 127.0.0.1, the sandbox WooCommerce storefront and the embedded SFTP
server (threads of this process), the ERP simulator (its own process, polling the SFTP server
on its interval), then Airflow's api-server, scheduler, dag-processor and triggerer on the
embedded defaults (SQLite, LocalExecutor), each its own process in its own process group
(:mod:`sandbox.airflow_services`). The connections reach Airflow as ``AIRFLOW_CONN_*``. It
unpauses the store's DAGs, prints the URL and the login, and places an order in the storefront
every few seconds (``--orders-per-minute``) so the schedule has something to do. Ctrl-C (or
``make down``, which sends SIGTERM) stops exactly what it started, by process group.

``make up REALTIME=1`` (``--realtime``) runs the store in ``mode: realtime`` (a copy of the store
config in the state folder): the sandbox sends signed webhooks to the api-server's receiver for
every order created or changed, and ``order_export_realtime__S`` delivers them within seconds,
the hourly window still running as the safety net.

The store is reset at each start, like the demo's: seeded orders over the last three hours (two
broken on purpose, so the quarantine has entries; the bank transfers wait for the ERP to book
their money), an empty ledger, staging and SFTP folder, and no earlier runs of the store's DAGs.

:class:`Stack` is what the UI tests start too (on free ports, in a temporary home).

CLI::

    python -m sandbox.stack up [--api-port 8080] [--storefront-port 8081] [--sftp-port 2222]
                               [--orders-per-minute 3] [--erp-interval 30] [--realtime]
    python -m sandbox.stack down
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pendulum

from sandbox.airflow_services import (
    LOCAL_COMPONENTS,
    ROOT,
    AirflowServices,
    ServicesError,
    process_running,
    tail,
)

STATE = ROOT / ".sandbox" / "up"
PID_FILE_NAME = "stack.json"
SEED_ORDERS = 90
SEED_HOURS = 3
#: The storefront's API credentials (a sandbox: not a secret).
CONSUMER_KEY, CONSUMER_SECRET = "ck_up_0123456789", "cs_up_0123456789"
#: The secret the sandbox signs its webhooks with in real-time mode (``extra.webhook_secret``).
WEBHOOK_SECRET = "whsec_up_0123456789"


class StackRefused(Exception):
    """The stack cannot start (or stop) as asked; the message is one sentence for the operator."""


def port_taken(port: int) -> bool:
    """Something listens on (or holds) 127.0.0.1:``port``. Closed connections waiting out
    TIME_WAIT (a stack just stopped) do not count: the servers bind with SO_REUSEADDR too."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), None when it is gone: with the
    pid it names one process, never a later one that reused the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(entry: Mapping[str, Any]) -> bool:
    return process_running(int(entry["pid"])) and _start_time(int(entry["pid"])) == entry.get("started")


class Stack:
    """The sandbox store, the ERP simulator and Airflow's four components; a context manager.

    :param airflow_home: Airflow's home (its ``airflow.db`` is migrated when missing).
    :param state_dir: the sandbox's files: SFTP root and keys, the ERP's state, logs.
    :param api_port, storefront_port, sftp_port: 127.0.0.1 ports; 0 picks free ones.
    :param orders_per_minute: new orders the storefront receives while the stack runs (0: none).
    :param erp_interval: seconds between the ERP's polls of the SFTP server.
    :param env: more environment for the Airflow components (e.g. leaner settings for tests).
    :param echo: where the stack's lines go (placed orders); ``print`` for ``make up``.
    :param migrate: run ``airflow db migrate`` first; ``None``: only when ``airflow.db`` is missing.
    """

    def __init__(self, airflow_home: Path, state_dir: Path = STATE, *, api_port: int = 8080,
                 storefront_port: int = 8081, sftp_port: int = 2222, store_id: str = "demo",
                 orders_per_minute: float = 3.0, erp_interval: float = 30.0,
                 env: Mapping[str, str] | None = None, echo: Callable[[str], None] = lambda _line: None,
                 migrate: bool | None = None, start_timeout: float = 300.0, realtime: bool = False) -> None:
        from order_integration.config import load_config

        self.airflow_home = Path(airflow_home).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.ports = {"api-server": api_port, "storefront": storefront_port, "sftp": sftp_port}
        self.realtime = realtime
        self.config_path: Path | None = None
        self.store = load_config().store(store_id)
        if realtime:  # the same store in mode realtime: the sandbox's webhooks drive its exports
            self.config_path = self._realtime_config(store_id)
            self.store = load_config(self.config_path).store(store_id)
        self.orders_per_minute = orders_per_minute
        self.erp_interval = erp_interval
        self.extra_env = dict(env or {})
        self.echo = echo
        self.start_timeout = start_timeout
        self.migrate = migrate
        self.shop: Any = None
        self.sftp: Any = None
        self.erp: subprocess.Popen[bytes] | None = None
        self.services: AirflowServices | None = None
        self.seeded: list[dict[str, Any]] = []
        #: the hour the seeded orders lead up to: they are modified in the 3 hours before it and since
        self.seed_hour = pendulum.now("UTC").start_of("hour")
        self.broken: dict[int, str] = {}
        self._stop_feeding = threading.Event()
        self._feeder: threading.Thread | None = None
        self._erp_log: Any = None

    # -- what the operator needs ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api-server']}"

    @property
    def password_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"

    def password(self) -> str:
        return json.loads(self.password_file.read_text())["admin"]

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def _realtime_config(self, store_id: str) -> Path:
        """A copy of the store config with this store in ``mode: realtime``, in the state folder."""
        import yaml

        from order_integration.config import config_path

        document = yaml.safe_load(Path(config_path()).read_text(encoding="utf-8"))
        for entry in document.get("stores") or []:
            if isinstance(entry, dict) and entry.get("id") == store_id:
                entry["mode"] = "realtime"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        target = self.state_dir / "stores.realtime.yaml"
        target.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return target

    def _fernet_key(self) -> str:
        """One Fernet key for every component (the dag-processor encrypts the inbox watcher's
        trigger arguments, the triggerer decrypts them), the same at every start in this Airflow
        home: chosen at the first start (the home's ``airflow.cfg`` key, else a new one) and kept
        beside it. A key that changed between starts would leave the triggerer unable to read
        the triggers already stored (it exits)."""
        path = self.airflow_home / "order_integration_fernet.key"
        if not path.exists():
            import configparser

            from cryptography.fernet import Fernet

            config = configparser.ConfigParser(interpolation=None)
            config.read(self.airflow_home / "airflow.cfg", encoding="utf-8")
            key = config.get("core", "fernet_key", fallback="").strip() or Fernet.generate_key().decode()
            self.airflow_home.mkdir(parents=True, exist_ok=True)
            path.write_text(key, encoding="utf-8")
        return path.read_text(encoding="utf-8").strip()

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/order-integration/webhooks/{self.store.id}"

    def dag_ids(self) -> list[str]:
        """The store's DAGs that exist (a batch store has no real-time export)."""
        kinds = ["order_export", "order_export_on_demand", "order_status_sync", "inventory_sync"]
        if self.store.mode == "realtime":
            kinds.append("order_export_realtime")
        return [f"{kind}__{self.store.id}" for kind in kinds]

    def process_groups(self) -> dict[str, int]:
        """Name -> pid (= process group id) of every process the stack started."""
        groups = {"erp-simulator": self.erp.pid} if self.erp is not None else {}
        if self.services is not None:
            groups.update({name: proc.pid for name, proc in self.services.procs.items()})
        return groups

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check_ports(self) -> None:
        """Refuse, in one sentence, ports another program holds (0 means "pick a free one")."""
        taken = [f"{port} ({name})" for name, port in self.ports.items() if port and port_taken(port)]
        if taken:
            which = (f"port {taken[0]} on 127.0.0.1 is" if len(taken) == 1
                     else f"ports {', '.join(taken)} on 127.0.0.1 are")
            raise StackRefused(f"{which} taken by another program: stop it, or choose other ports "
                               f"(make up API_PORT=... STOREFRONT_PORT=... SFTP_PORT=...)")

    def start(self) -> Stack:
        """Refuse taken ports, reset the store's state, start everything, unpause its DAGs."""
        self.check_ports()
        self._reset()
        self._start_sandbox()
        self._start_erp()
        env = {
            **self.extra_env,
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__PARALLELISM": self.extra_env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            **self.connections(),
        }
        env.setdefault("AIRFLOW__CORE__FERNET_KEY", self._fernet_key())
        if self.config_path is not None:
            env["ORDER_INTEGRATION_CONFIG"] = str(self.config_path)
        self.services = AirflowServices(self.airflow_home, env, LOCAL_COMPONENTS, dag_ids=self.dag_ids(),
                                        api_port=self.ports["api-server"] or None,
                                        migrate=(self.migrate if self.migrate is not None
                                                 else not (self.airflow_home / "airflow.db").exists()),
                                        start_timeout=self.start_timeout)
        self.ports["api-server"] = self.services.api_port
        self.services.start()
        from order_integration.pools import pools_for

        self.services.api.ensure_pools(pools_for([self.store]))
        for dag_id in self.dag_ids():
            self.services.api.unpause(dag_id)
        if self.realtime:  # from now on every order created or changed is announced, signed
            self.shop.send_webhooks(self.webhook_url, WEBHOOK_SECRET)
        if self.orders_per_minute > 0:
            self._feeder = threading.Thread(target=self._feed, name="stack-orders", daemon=True)
            self._feeder.start()
        return self

    def stop(self) -> None:
        """Stop what was started, last first; safe to call twice."""
        self._stop_feeding.set()
        if self._feeder is not None:
            self._feeder.join(timeout=10)
            self._feeder = None
        if self.services is not None:
            self.services.stop()
        if self.erp is not None:
            _stop_group(self.erp)
            self.erp = None
        if self._erp_log is not None:
            self._erp_log.close()
            self._erp_log = None
        for server in (self.sftp, self.shop):
            if server is not None:
                server.stop()
        self.sftp = self.shop = None

    # -- the parts -----------------------------------------------------------------------------

    def connections(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` of the storefront and the SFTP server (once they are started)."""
        storefront: dict[str, Any] = {"conn_type": "http", "host": self.shop.base_url, "login": CONSUMER_KEY,
                                      "password": CONSUMER_SECRET}
        if self.realtime:
            storefront["extra"] = {"webhook_secret": WEBHOOK_SECRET}
        return {
            f"AIRFLOW_CONN_{self.store.storefront_conn_id.upper()}": json.dumps(storefront),
            f"AIRFLOW_CONN_{self.store.backend_conn_id.upper()}": json.dumps(self.sftp.airflow_connection()),
        }

    def _reset(self) -> None:
        """The store starts afresh: its ledger, staging, SFTP folder, the ERP's memory and its
        DAGs' earlier runs go (the seeded storefront is new, so they would describe other orders)."""
        from order_integration.ledger import migrate, sqlite_engine

        for stale in ("sftp", "logs", "erp_state.json"):
            target = self.state_dir / stale
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.airflow_home / "order_staging", ignore_errors=True)
        for db in self.airflow_home.glob("order_ledger.db*"):
            db.unlink()
        migrate(sqlite_engine(self.airflow_home / "order_ledger.db"))
        if self._has_runs():
            self._forget_runs()

    def _has_runs(self) -> bool:
        db = self.airflow_home / "airflow.db"
        if not db.exists():
            return False
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
            try:
                marks = ",".join("?" * len(self.dag_ids()))
                found = conn.execute(f"SELECT count(*) FROM dag_run WHERE dag_id IN ({marks})",
                                     self.dag_ids()).fetchone()
            except sqlite3.DatabaseError:  # not migrated yet
                return False
        return bool(found and found[0])

    def _forget_runs(self) -> None:
        # no stack is up (checked): a task still marked running was left by one stopped mid-task
        code = (f"from sandbox.demo import forget_earlier_runs; "
                f"forget_earlier_runs({self.store.id!r}, orphaned=True)")
        database = f"sqlite:///{self.airflow_home / 'airflow.db'}?timeout=60"
        env = {**os.environ, "AIRFLOW_HOME": str(self.airflow_home),
               "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database}
        proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300, check=False)
        if proc.returncode != 0:
            raise StackRefused(f"the earlier runs of the store's DAGs could not be removed: "
                               f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")

    def _start_sandbox(self) -> None:
        from sandbox.demo import awaiting_bank_transfer
        from sandbox.generator import generate_orders, make_invalid
        from sandbox.sftp_server import EmbeddedSftpServer
        from sandbox.storefront import SandboxStorefront, default_products

        now = pendulum.now("UTC")
        hour = self.seed_hour = now.start_of("hour")
        orders = generate_orders(SEED_ORDERS, start=hour.subtract(hours=SEED_HOURS),
                                 end=now.subtract(seconds=30), seed=42)
        # One broken order in the last complete hour (the schedule's first run quarantines it)
        # and one in the first seeded hour (for an on-demand window that no status write-back
        # of the scheduled run's orders reaches).
        for kind, hours_back in (("total_mismatch", 1), ("bad_email", SEED_HOURS)):
            lo, hi = hour.subtract(hours=hours_back), hour.subtract(hours=hours_back - 1)
            found = next((i for i, o in enumerate(orders) if o["status"] in self.store.export_statuses
                          and lo <= pendulum.parse(o["date_modified_gmt"], tz="UTC") < hi), None)
            if found is not None:
                orders[found] = make_invalid(orders[found], kind)
                self.broken[int(orders[found]["id"])] = kind
        for order in orders:
            if order["status"] == "on-hold":
                awaiting_bank_transfer(order)
        self.seeded = orders
        self.shop = SandboxStorefront(orders, port=self.ports["storefront"], consumer_key=CONSUMER_KEY,
                                      consumer_secret=CONSUMER_SECRET, products=default_products()).start()
        self.ports["storefront"] = self.shop.port
        self.sftp = EmbeddedSftpServer(self.state_dir / "sftp", self.state_dir / "keys",
                                       port=self.ports["sftp"]).start()
        self.ports["sftp"] = self.sftp.port

    def _start_erp(self) -> None:
        backend = self.store.backend
        conn_file = self.state_dir / "sftp_conn.json"
        conn_file.write_text(json.dumps(self.sftp.airflow_connection()), encoding="utf-8")
        argv = [sys.executable, "-m", "sandbox.erp_simulator", "--conn-id", self.store.backend_conn_id,
                "--conn-file", str(conn_file), "--interval", str(self.erp_interval),
                "--state", str(self.state_dir / "erp_state.json"), "--inbound-dir", backend.inbound_dir,
                "--outbound-dir", backend.outbound_dir, "--stock-dir", backend.stock_dir]
        self._erp_log = (self.log_dir / "erp-simulator.log").open("ab")
        env = {**os.environ, "AIRFLOW_HOME": str(self.airflow_home), "PYTHONUNBUFFERED": "1"}
        self.erp = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._erp_log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def _feed(self) -> None:
        """Place an order now and then, like customers would (a seeded random mix of statuses)."""
        from sandbox.demo import awaiting_bank_transfer
        from sandbox.generator import generate_orders

        rng = random.Random(4242)
        next_id = max((int(o["id"]) for o in self.seeded), default=1000) + 1
        while not self._stop_feeding.wait(60.0 / self.orders_per_minute * rng.uniform(0.5, 1.5)):
            now = pendulum.now("UTC")
            [order] = generate_orders(1, start=now.subtract(seconds=1), end=now, seed=rng.randrange(1 << 30),
                                      first_id=next_id)
            if order["status"] == "on-hold":
                awaiting_bank_transfer(order)
            self.shop.add_orders([order])
            next_id += 1
            self.echo(f"{now.format('HH:mm:ss')} storefront: order {order['id']} placed "
                      f"({order['status']}, {order['total']} {order['currency']})")

    def lines(self) -> list[str]:
        """What ``make up`` prints once everything is up."""
        quarantine = ", ".join(f"{oid} ({kind})" for oid, kind in self.broken.items())
        return [
            f"Airflow UI    {self.url}",
            f"login         admin / {self.password()}  (simple auth manager: "
            f"{_shown(self.password_file)})",
            f"storefront    {self.shop.base_url}  ({len(self.seeded)} orders over the last {SEED_HOURS} "
            f"hours; broken on purpose: {quarantine or 'none'}; about {self.orders_per_minute:g} new orders "
            f"a minute)",
            f"sftp          127.0.0.1:{self.sftp.port}  (files in {_shown(self.state_dir / 'sftp')})",
            f"erp simulator polls every {self.erp_interval:g} s  "
            f"(log {_shown(self.log_dir / 'erp-simulator.log')})",
            f"DAGs unpaused {', '.join(self.dag_ids())}",
            *([f"real time     the storefront sends its webhooks to {self.webhook_url}; each order "
               f"reaches SFTP through order_export_realtime__{self.store.id} within seconds "
               f"(config {_shown(self.config_path)})"] if self.config_path is not None else []),
            f"logs          {_shown(self.airflow_home / 'services')}/<component>.log",
        ]


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """TERM the process group of ``proc``, KILL it if it is still there after ``timeout``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# -- the pid file and the CLI ----------------------------------------------------------------------


def _pid_file(state_dir: Path) -> Path:
    return state_dir / PID_FILE_NAME


def running_stack(state_dir: Path = STATE) -> dict[str, Any] | None:
    """The stack recorded in the pid file when its process is still running, else None."""
    path = _pid_file(state_dir)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if _alive(record) else None


def _write_pid_file(stack: Stack, state_dir: Path) -> None:
    record = {"pid": os.getpid(), "started": _start_time(os.getpid()), "url": stack.url,
              "since": pendulum.now("UTC").to_iso8601_string(),
              "groups": {name: {"pid": pid, "started": _start_time(pid)}
                         for name, pid in stack.process_groups().items()}}
    path = _pid_file(state_dir)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _watch(stack: Stack) -> int:
    """Until Ctrl-C or SIGTERM (0), or until a part exits by itself (1, with its log's tail)."""
    assert stack.services is not None
    try:
        while True:
            parts = [*stack.services.procs.items(), ("erp-simulator", stack.erp)]
            for name, proc in parts:
                if proc is not None and proc.poll() is not None:
                    log = (stack.log_dir / "erp-simulator.log" if name == "erp-simulator"
                           else stack.services.log_file(name))
                    print(f"{name} exited with {proc.returncode}; the last lines of {_shown(log)}:\n"
                          f"{tail(log, 20)}\nstopping the rest.", flush=True)
                    return 1
            time.sleep(2)
    except KeyboardInterrupt:
        return 0
    finally:
        # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping...", flush=True)


def up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    earlier = running_stack(state_dir)
    if earlier is not None:
        raise StackRefused(f"a stack is already up (pid {earlier['pid']}, {earlier['url']}, since "
                           f"{earlier['since']}): use it, or stop it first with make down")
    home = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".airflow"))
    stack = Stack(home, state_dir, api_port=args.api_port, storefront_port=args.storefront_port,
                  sftp_port=args.sftp_port, orders_per_minute=args.orders_per_minute,
                  erp_interval=args.erp_interval, echo=lambda line: print(line, flush=True), migrate=True,
                  realtime=args.realtime)
    stack.check_ports()
    signal.signal(signal.SIGTERM, _interrupt)  # make down: the same clean stop as Ctrl-C
    started = time.monotonic()
    print("starting the sandbox storefront, the SFTP server, the ERP simulator and Airflow's api-server, "
          "scheduler, dag-processor and triggerer (a minute or two)...", flush=True)
    try:
        with stack:
            _write_pid_file(stack, state_dir)
            print(f"\nup in {time.monotonic() - started:.0f} s", flush=True)
            for line in stack.lines():
                print(line, flush=True)
            print("\nCtrl-C (or make down from another shell) stops everything.\n", flush=True)
            code = _watch(stack)
    except KeyboardInterrupt:
        code = 130
    except ServicesError as exc:
        print(f"Airflow did not come up: {str(exc).splitlines()[0]}\n"
              f"(component logs in {_shown(home / 'services')})", file=sys.stderr)
        code = 1
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(_pid_file(state_dir).read_text()).get("pid") == os.getpid():
                _pid_file(state_dir).unlink()
    print("stopped the storefront, the SFTP server, the ERP simulator and Airflow's components.", flush=True)
    return code


def down(args: argparse.Namespace) -> int:
    """Stop the stack of the pid file: SIGTERM to ``make up``'s process (it stops its parts), then
    any of its process groups still there (the process was killed without its clean-up)."""
    path = _pid_file(Path(args.state_dir))
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        print("no stack is up (no pid file): nothing to stop")
        return 0
    if _alive(record):
        os.kill(int(record["pid"]), signal.SIGTERM)
        deadline = time.monotonic() + 90
        while _alive(record) and time.monotonic() < deadline:
            time.sleep(0.5)
    left = {name: g for name, g in record.get("groups", {}).items() if _alive(g)}
    for group in left.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(group["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + 20
    while any(_alive(g) for g in left.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for group in left.values():
        if _alive(group):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(group["pid"]), signal.SIGKILL)
    path.unlink(missing_ok=True)
    print(f"stopped the stack of pid {record['pid']} ({record.get('url')})"
          + (f"; also its left-over {', '.join(left)}" if left else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", default=str(STATE), help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start the stack in the foreground until Ctrl-C")
    up_parser.add_argument("--api-port", type=int, default=8080)
    up_parser.add_argument("--storefront-port", type=int, default=8081)
    up_parser.add_argument("--sftp-port", type=int, default=2222)
    up_parser.add_argument("--orders-per-minute", type=float, default=3.0)
    up_parser.add_argument("--erp-interval", type=float, default=30.0)
    up_parser.add_argument("--realtime", action="store_true",
                           help="store in mode realtime: the sandbox sends its webhooks to the api-server")
    sub.add_parser("down", help="stop a stack left running in the background")
    args = parser.parse_args(argv)
    try:
        return up(args) if args.command == "up" else down(args)
    except StackRefused as exc:
        print(f"make {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
