"""Store config: YAML -> frozen, validated objects.

Read at DAG parse time, so this module imports only the standard library and PyYAML and
does no I/O beyond reading the one file (croniter, which checks cron schedules as Airflow's
timetables do, is imported when a schedule is checked: the DAG files' timetables import it
at parse time anyway). Unknown keys and bad values are refused with a
message that names the key (``stores[0].backend.format: 'xml' is not one of csv, jsonl``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from order_integration.exceptions import ConfigError

FileFormat = Literal["csv", "jsonl"]
Platform = Literal["woocommerce", "shopify"]
#: ``batch``: the scheduled window only; ``realtime``: the webhook inbox wakes an export of the
#: orders waiting (``order_export_realtime__S``), and the scheduled window stays as the safety net.
Mode = Literal["batch", "realtime"]
#: What feeds real-time mode's inbox: ``webhooks`` (the storefront calls the api-server's receiver)
#: or ``polling`` (a trigger asks the storefront for orders modified since the last scan, for shops
#: that cannot reach the api-server; docs/webhooks.md, "Polling fallback").
RealtimeSource = Literal["webhooks", "polling"]
#: ``export_statuses`` of a store whose config names none, per platform (Shopify: the
#: ``displayFinancialStatus`` of an order that is paid or whose payment is authorized).
DEFAULT_EXPORT_STATUSES: dict[str, tuple[str, ...]] = {
    "woocommerce": ("processing", "on-hold"),
    "shopify": ("paid", "partially_paid", "authorized"),
}

CONFIG_ENV = "ORDER_INTEGRATION_CONFIG"
STAGING_ENV = "ORDER_INTEGRATION_STAGING"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "stores.yaml"

_STORE_ID = re.compile(r"[a-z0-9_]{1,32}")
_CONN_ID = re.compile(r"[A-Za-z0-9_.\-]{1,250}")
_PRESETS = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}
_REMOTE_DIR = re.compile(r"[^\x00]+")


@dataclass(frozen=True, slots=True)
class BackendConfig:
    inbound_dir: str = "inbound"
    outbound_dir: str = "outbound"
    stock_dir: str = "stock"
    format: FileFormat = "csv"


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    """The quarantine breaker: a window fails when more than ``max_quarantine_ratio`` of the
    orders it validated were newly quarantined, once it validated at least
    ``min_validated_for_ratio`` orders (fewer say nothing about an API change)."""

    max_quarantine_ratio: float = 0.05
    min_validated_for_ratio: int = 20


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Where failures and late windows are reported. Every alert is also a log line."""

    conn_id: str | None = None  # an smtp or slackwebhook connection; None: log lines only
    to: tuple[str, ...] = ()  # e-mail recipients, for an smtp connection
    export_late_after_minutes: int = 60  # window not exported this long after it closed; 0: off


@dataclass(frozen=True, slots=True)
class StoreConfig:
    id: str
    storefront_conn_id: str
    backend_conn_id: str
    platform: Platform = "woocommerce"
    mode: Mode = "batch"
    #: Real-time mode: how often the triggerer looks at the webhook inbox for new deliveries
    #: (``realtime_source: polling``: and asks the storefront for modified orders).
    realtime_poll_seconds: int = 5
    realtime_source: RealtimeSource = "webhooks"
    schedule: str = "@hourly"
    status_sync_schedule: str = "*/10 * * * *"
    inventory_sync_schedule: str = "*/15 * * * *"
    #: Switch WooCommerce stock management on for a product that has it off when a stock file
    #: names it (False: such rows are reported as ``unmanaged`` and the product is left alone).
    manage_stock_on_apply: bool = False
    #: A ``refunded`` line of a status file (``sku`` + ``quantity``) puts those units back in the
    #: storefront's stock (WooCommerce ``api_restock``). Off by default: the warehouse decides
    #: what is sellable again after a return and says so in its stock files.
    restock_refunds: bool = False
    #: A stock file's ``location`` names → the storefront's location ids, for a platform that
    #: keeps a level per location (Shopify); ``default_stock_location``: the location id of rows
    #: without a ``location``. A platform with one level per SKU (WooCommerce) ignores both.
    stock_locations: Mapping[str, str] = field(default_factory=dict)
    default_stock_location: str | None = None
    lookback_minutes: int = 10
    export_statuses: tuple[str, ...] = ("processing", "on-hold")
    backend: BackendConfig = field(default_factory=BackendConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    storefront_concurrency: int = 2  # slots of the pool shared by every task calling the storefront
    #: Tries after the first of every task (permanent errors are never retried), and the first
    #: delay between them; later delays double up to the DAG's cap.
    retries: int = 3
    retry_delay_seconds: int = 60

    @property
    def storefront_pool(self) -> str:
        """The pool of the storefront connection (stores sharing a connection share it)."""
        return pool_name("storefront", self.storefront_conn_id)

    @property
    def load_pool(self) -> str:
        """A one-slot pool per store: loads of overlapping runs (backfill and schedule) queue."""
        return pool_name("order_load", self.id)


def pool_name(kind: str, key: str) -> str:
    return f"{kind}__{key}"


@dataclass(frozen=True, slots=True)
class Config:
    stores: tuple[StoreConfig, ...]

    def store(self, store_id: str) -> StoreConfig:
        for store in self.stores:
            if store.id == store_id:
                return store
        known = ", ".join(s.id for s in self.stores) or "none"
        raise ConfigError(f"store {store_id!r} is not in the config (stores: {known})")


def config_path() -> Path:
    """The config file: ``$ORDER_INTEGRATION_CONFIG`` or the packaged ``include/stores.yaml``."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


_LOADED: dict[tuple[str, int, int], Config] = {}


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate the store config.

    Every DAG file reads it at parse time; a process that parses several (a DagBag, the
    CLI) reads and validates an unchanged file once (keyed by path, mtime and size)."""
    path = Path(path) if path is not None else config_path()
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key in _LOADED:
            return _LOADED[key]
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read store config {path} ({CONFIG_ENV}): {exc}") from exc
    try:
        # libyaml's loader when present: parsing happens on every DAG parse (8x faster).
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ConfigError(f"store config {path} is not valid YAML: {exc}") from exc
    config = parse_config(data, source=str(path))
    _LOADED.clear()  # one config at a time: a changed file replaces the old entry
    _LOADED[key] = config
    return config


def parse_config(data: Any, *, source: str = "config") -> Config:
    """Validate an already-loaded YAML document."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping with a 'stores' list")
    _refuse_unknown(data, {"stores"}, source)
    raw_stores = data.get("stores")
    if not isinstance(raw_stores, list) or not raw_stores:
        raise ConfigError(f"{source}: 'stores' must be a non-empty list")
    stores = tuple(_store(raw, f"stores[{i}]") for i, raw in enumerate(raw_stores))
    seen: set[str] = set()
    for i, store in enumerate(stores):
        if store.id in seen:
            raise ConfigError(f"stores[{i}].id: {store.id!r} appears twice")
        seen.add(store.id)
    return Config(stores=stores)


def _refuse_unknown(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(map(str, raw)) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {', '.join(repr(k) for k in unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _str(raw: Mapping[str, Any], key: str, where: str, pattern: re.Pattern[str], default: Any) -> str:
    value = raw.get(key, default)
    if value is None:
        raise ConfigError(f"{where}.{key}: required")
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(f"{where}.{key}: {value!r} does not match {pattern.pattern}")
    return value


def _store(raw: Any, where: str) -> StoreConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    store_id = _str(raw, "id", where, _STORE_ID, None)
    where = f"{where} ({store_id})"
    _refuse_unknown(raw, _names(StoreConfig), where)
    platform = raw.get("platform", "woocommerce")
    if platform not in get_args(Platform):
        raise ConfigError(f"{where}.platform: {platform!r} is not one of {', '.join(get_args(Platform))}")
    mode = raw.get("mode", "batch")
    if mode not in get_args(Mode):
        raise ConfigError(f"{where}.mode: {mode!r} is not one of {', '.join(get_args(Mode))}")
    source = raw.get("realtime_source", "webhooks")
    if source not in get_args(RealtimeSource):
        raise ConfigError(f"{where}.realtime_source: {source!r} is not one of "
                          f"{', '.join(get_args(RealtimeSource))}")
    if source == "polling" and mode != "realtime":
        raise ConfigError(f"{where}.realtime_source: 'polling' needs mode: realtime (mode is {mode!r})")
    schedule = _schedule(raw, "schedule", "@hourly", where)
    status_sync_schedule = _schedule(raw, "status_sync_schedule", "*/10 * * * *", where)
    inventory_sync_schedule = _schedule(raw, "inventory_sync_schedule", "*/15 * * * *", where)
    manage_stock_on_apply = raw.get("manage_stock_on_apply", False)
    if not isinstance(manage_stock_on_apply, bool):
        raise ConfigError(f"{where}.manage_stock_on_apply: {manage_stock_on_apply!r} is not true or false")
    restock_refunds = raw.get("restock_refunds", False)
    if not isinstance(restock_refunds, bool):
        raise ConfigError(f"{where}.restock_refunds: {restock_refunds!r} is not true or false")
    lookback = _int(raw, "lookback_minutes", 10, 0, 7 * 24 * 60, where)
    statuses = raw.get("export_statuses", list(DEFAULT_EXPORT_STATUSES[platform]))
    if (
        not isinstance(statuses, list)
        or not statuses
        or not all(isinstance(s, str) and s.strip() for s in statuses)
    ):
        raise ConfigError(f"{where}.export_statuses: {statuses!r} is not a non-empty list of statuses")
    return StoreConfig(
        id=store_id,
        platform=platform,
        mode=mode,
        realtime_poll_seconds=_int(raw, "realtime_poll_seconds", 5, 1, 3600, where),
        realtime_source=source,
        storefront_conn_id=_str(raw, "storefront_conn_id", where, _CONN_ID, None),
        backend_conn_id=_str(raw, "backend_conn_id", where, _CONN_ID, None),
        schedule=schedule,
        status_sync_schedule=status_sync_schedule,
        inventory_sync_schedule=inventory_sync_schedule,
        manage_stock_on_apply=manage_stock_on_apply,
        restock_refunds=restock_refunds,
        stock_locations=_stock_locations(raw.get("stock_locations"), f"{where}.stock_locations"),
        default_stock_location=_location_id(raw.get("default_stock_location"),
                                            f"{where}.default_stock_location"),
        lookback_minutes=lookback,
        export_statuses=tuple(statuses),
        backend=_backend(raw.get("backend") or {}, f"{where}.backend"),
        validation=_validation(raw.get("validation") or {}, f"{where}.validation"),
        alerts=_alerts(raw.get("alerts") or {}, f"{where}.alerts"),
        storefront_concurrency=_int(raw, "storefront_concurrency", 2, 1, 64, where),
        retries=_int(raw, "retries", 3, 0, 20, where),
        retry_delay_seconds=_int(raw, "retry_delay_seconds", 60, 1, 24 * 3600, where),
    )


#: A stock file's location name (the parser strips cells) and a storefront location id.
_LOCATION_NAME = re.compile(r"[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]{0,62}[^\x00-\x1f\x7f\s])?")
_LOCATION_ID = re.compile(r"[^\x00-\x1f\x7f\s]{1,255}")


def _location_id(value: Any, where: str) -> str | None:
    """A storefront location id (Shopify: ``gid://shopify/Location/123`` or ``123``), or ``None``."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        value = str(value)
    if not isinstance(value, str) or not _LOCATION_ID.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is not a location id (1..255 characters, no spaces)")
    return value


def _stock_locations(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping of stock file location names to location ids")
    out: dict[str, str] = {}
    for name, location in raw.items():
        if not isinstance(name, str) or not _LOCATION_NAME.fullmatch(name):
            raise ConfigError(f"{where}: {name!r} is not a location name (1..64 characters, "
                              "no surrounding spaces)")
        out[name] = _location_id(location, f"{where}.{name}") or ""
        if not out[name]:
            raise ConfigError(f"{where}.{name}: a location id is required")
    return out


def _int(raw: Mapping[str, Any], key: str, default: int, low: int, high: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}.{key}: {value!r} is not an integer in {low}..{high}")
    return value


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def _alerts(raw: Any, where: str) -> AlertsConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    _refuse_unknown(raw, _names(AlertsConfig), where)
    conn_id = raw.get("conn_id")
    if conn_id is not None:
        conn_id = _str(raw, "conn_id", where, _CONN_ID, None)
    to = raw.get("to", [])
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not all(isinstance(t, str) and _EMAIL.fullmatch(t) for t in to):
        raise ConfigError(f"{where}.to: {to!r} is not a list of e-mail addresses")
    late = _int(raw, "export_late_after_minutes", 60, 0, 7 * 24 * 60, where)
    return AlertsConfig(conn_id=conn_id, to=tuple(to), export_late_after_minutes=late)


def _backend(raw: Any, where: str) -> BackendConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    _refuse_unknown(raw, _names(BackendConfig), where)
    fmt = raw.get("format", "csv")
    if fmt not in get_args(FileFormat):
        raise ConfigError(f"{where}.format: {fmt!r} is not one of {', '.join(get_args(FileFormat))}")
    dirs = {k: _str(raw, k, where, _REMOTE_DIR, d) for k, d in
            (("inbound_dir", "inbound"), ("outbound_dir", "outbound"), ("stock_dir", "stock"))}
    return BackendConfig(format=fmt, **dirs)


def _validation(raw: Any, where: str) -> ValidationConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    _refuse_unknown(raw, _names(ValidationConfig), where)
    ratio = raw.get("max_quarantine_ratio", 0.05)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
        raise ConfigError(f"{where}.max_quarantine_ratio: {ratio!r} is not a number in 0..1")
    default = ValidationConfig().min_validated_for_ratio
    minimum = _int(raw, "min_validated_for_ratio", default, 0, 10**9, where)
    return ValidationConfig(max_quarantine_ratio=float(ratio), min_validated_for_ratio=minimum)


def _schedule(raw: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not _valid_schedule(value):
        raise ConfigError(f"{where}.{key}: {value!r} is not a cron expression or preset")
    problem = _cron_problem(value)
    if problem is not None:
        raise ConfigError(f"{where}.{key}: {value!r} is not a valid cron expression: {problem}")
    return value


def _valid_schedule(schedule: str) -> bool:
    if schedule in _PRESETS:
        return True
    parts = schedule.split()
    return len(parts) == 5 and all(re.fullmatch(r"[0-9A-Za-z*/,\-?LW#]+", p) for p in parts)


def _cron_problem(schedule: str) -> str | None:
    """Why croniter — what Airflow's cron timetables validate with — refuses ``schedule``
    (``99 * * * *``: out of range), else ``None``; refused here, the store and key are named,
    where the DAG would fail to import later. croniter is imported here, not at module level:
    the DAG files' timetables import it at parse time anyway, a bare config read need not."""
    if schedule in _PRESETS:
        return None
    from croniter import CroniterError, croniter

    try:
        croniter(schedule)
    except CroniterError as exc:
        return str(exc)
    return None


def cron_of(schedule: str) -> str:
    """A cron expression for a preset (``@hourly`` -> ``0 * * * *``); cron passes through."""
    presets = {
        "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
        "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
    }
    return presets.get(schedule, schedule)


def staging_base() -> str:
    """Staging base URL: ``$ORDER_INTEGRATION_STAGING`` or ``file://$AIRFLOW_HOME/order_staging``."""
    explicit = os.environ.get(STAGING_ENV)
    if explicit:
        return explicit.rstrip("/")
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow").resolve()
    return f"file://{home / 'order_staging'}"
