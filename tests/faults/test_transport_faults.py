"""Transport faults (issue 6, item 2): each ends in success with the right data or in a clear error.

Storefront: the real ``WooCommerceClient`` (``HttpHook``, an ``AIRFLOW_CONN_…`` connection) reads
a multi-page window from the sandbox storefront through ``export.extract`` while the sandbox
serves a fault in the middle of the listing (queued from the client's own page callback, so
the first pages are clean). Only the client's sleeps are recorded instead of slept.

Backend: the real ``SftpBackend``/``SftpSession`` (``SFTPHook``) talk to OpenSSH through
:class:`~tests.support.fault_proxy.FaultProxy`, which drops the TCP connection mid-upload or
mid-listing, and to an embedded server whose disk fills up.
"""

from __future__ import annotations

import io
import json
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
import requests

from order_integration import export
from order_integration.backend.sftp import SftpBackend
from order_integration.config import parse_config
from order_integration.exceptions import BackendError, PermanentError, StorefrontError
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.model import order_record
from order_integration.storefronts.woocommerce import WooCommerceClient, normalise_order
from order_integration.windows import Window
from sandbox.generator import generate_orders
from sandbox.storefront import SandboxStorefront
from tests.support.fault_proxy import FaultProxy
from tests.support.orders import make_order
from tests.support.sftp_faults import NO_SPACE, DiskFullSftpServer

pytestmark = pytest.mark.faults

WINDOW = Window.parse("2026-11-02T10:00:00Z", "2026-11-02T11:00:00Z")
ORDERS = generate_orders(36, start=WINDOW.start, end=WINDOW.end, seed=606)
PER_PAGE = 5  # 36 orders: 8+ pages, so page 2 and 3 are in the middle of the listing
MAX_ATTEMPTS = 4
KEY, SECRET = "ck_transport_faults", "cs_transport_faults"
STORE = parse_config({"stores": [{
    "id": "transport", "storefront_conn_id": "storefront_transport", "backend_conn_id": "backend_proxy",
    "backend": {"inbound_dir": "inbound_transport"}}]}).stores[0]
#: The shop's clock (REST edits bump date_modified to it): the last second of the window.
SHOP_NOW = WINDOW.end.subtract(seconds=1)
MB = 1024 * 1024


def _versions(rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    return {(row["id"], normalise_order(row, STORE.id).record()["order_version"]) for row in rows}


def _in_span(order: dict[str, Any]) -> bool:
    span = WINDOW.with_lookback(STORE.lookback_minutes)
    modified = pendulum.parse(order["date_modified_gmt"], tz="UTC")
    return span.start <= modified < span.end


#: What a loss-free read of the window must return: computed from the seed, not from a scan.
EXPECTED = _versions([o for o in ORDERS if _in_span(o)])


# --------------------------------------------------------------------------------------------
# storefront
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop() -> Iterator[SandboxStorefront]:
    with SandboxStorefront(ORDERS, consumer_key=KEY, consumer_secret=SECRET, clock=lambda: SHOP_NOW) as server:
        yield server


@pytest.fixture
def storefront(shop: SandboxStorefront, monkeypatch: pytest.MonkeyPatch) -> SandboxStorefront:
    shop.reset()
    monkeypatch.setenv(f"AIRFLOW_CONN_{STORE.storefront_conn_id.upper()}", json.dumps(
        {"conn_type": "http", "host": shop.base_url, "login": KEY, "password": SECRET}))
    return shop


def _client(sleeps: list[float], on_page: Callable[..., None] | None = None, **kwargs: Any) -> WooCommerceClient:
    kwargs.setdefault("timeout", 5)
    return WooCommerceClient(STORE.storefront_conn_id, per_page=PER_PAGE, max_attempts=MAX_ATTEMPTS,
                             sleep=sleeps.append, on_page=on_page, **kwargs)


def _after_page(shop: SandboxStorefront, page: int, faults: list[dict[str, Any]]) -> Callable[..., None]:
    """A page callback queueing ``faults`` once ``page`` pages were read: page+1 meets them."""

    def on_page(pages: int, _seen: int, _estimate: int | None) -> None:
        if pages == page:
            shop.inject_faults(faults)

    return on_page


def _extract(tmp_path: Path, client: WooCommerceClient) -> list[dict[str, Any]]:
    """``export.extract`` of WINDOW into staging; the staged rows."""
    from airflow.sdk import ObjectStoragePath

    staging = export.run_dir(ObjectStoragePath(f"file://{tmp_path / 'staging'}"), STORE.id, WINDOW, "run")
    result = export.extract(STORE, WINDOW, staging, client)
    rows = [json.loads(line) for line in ObjectStoragePath(result["raw_path"]).read_text().splitlines()]
    assert result["extracted"] == len(rows)
    return rows


def _staged_rows(tmp_path: Path) -> list[str]:
    from airflow.sdk import ObjectStoragePath

    staging = export.run_dir(ObjectStoragePath(f"file://{tmp_path / 'staging'}"), STORE.id, WINDOW, "run")
    raw = Path(staging.path) / export.RAW_FILE
    return raw.read_text().splitlines() if raw.exists() else []


def test_clean_read_is_the_whole_window_over_many_pages(storefront: SandboxStorefront, tmp_path: Path) -> None:
    sleeps: list[float] = []
    rows = _extract(tmp_path, _client(sleeps))
    assert _versions(rows) == EXPECTED and len(rows) == len(EXPECTED) > 3 * PER_PAGE
    assert sleeps == []
    assert len(storefront.request_log) > 3


#: (fault queued mid-listing, the client's sleeps: None = exponential backoff 1, 2, 4 s ...)
RECOVERABLE = {
    "429 storm with Retry-After": ([{"type": "429", "retry_after": 2, "times": 3}], [2.0, 2.0, 2.0]),
    "429 storm without Retry-After": ([{"type": "429", "retry_after": None, "times": 3}], None),
    "500": ([{"type": "500", "times": 2}], None),
    "502": ([{"type": "502", "times": 2}], None),
    "503 with Retry-After": ([{"type": "503", "retry_after": 1, "times": 2}], [1.0, 1.0]),
    "timeout": ([{"type": "delay", "seconds": 1.0}], None),
    "HTML body with 200": ([{"type": "html"}], None),
    "truncated JSON with 200": ([{"type": "truncated", "times": 2}], None),
    "empty page mid-listing": ([{"type": "empty", "times": 2}], None),
}


@pytest.mark.parametrize("after_page", [1, 2], ids=["page2", "page3"])
@pytest.mark.parametrize("kind", list(RECOVERABLE))
def test_fault_within_the_retry_budget_reads_the_same_orders(
    storefront: SandboxStorefront, tmp_path: Path, kind: str, after_page: int
) -> None:
    faults, expected_sleeps = RECOVERABLE[kind]
    sleeps: list[float] = []
    client = _client(sleeps, _after_page(storefront, after_page, faults), timeout=0.4)
    rows = _extract(tmp_path, client)
    assert storefront.pending_faults == [], "every queued fault was served"
    assert _versions(rows) == EXPECTED
    assert len(rows) == len({row["id"] for row in rows})
    served = sum(int(f.get("times", 1)) for f in faults)
    assert len(sleeps) == served, sleeps  # one retry per fault served, no more
    backoff = [float(2**n) for n in range(served)]  # never a busy loop
    assert sleeps == (backoff if expected_sleeps is None else expected_sleeps)
    statuses = {status for _m, _p, status in storefront.request_log}
    if kind[:3].isdigit():
        assert int(kind[:3]) in statuses


#: A storm longer than the retry budget: the cause each failure message must name.
FATAL = {
    "429 without Retry-After": ({"type": "429", "retry_after": None}, "HTTP 429 (Retry-After None)"),
    "429 with Retry-After": ({"type": "429", "retry_after": 1}, "HTTP 429 (Retry-After 1.0)"),
    "500": ({"type": "500"}, "HTTP 500 internal_server_error"),
    "502": ({"type": "502"}, "HTTP 502 '<html>"),
    "503": ({"type": "503", "retry_after": 1}, "HTTP 503"),
    "timeout": ({"type": "delay", "seconds": 0.8}, "Read timed out"),
    "HTML body with 200": ({"type": "html"}, "is not valid JSON"),
    "truncated JSON with 200": ({"type": "truncated"}, "is not valid JSON"),
    "empty page mid-listing": ({"type": "empty"}, "incomplete page"),
}


@pytest.mark.parametrize("kind", list(FATAL))
def test_storm_beyond_the_retry_budget_fails_clearly_and_stages_nothing(
    storefront: SandboxStorefront, tmp_path: Path, kind: str
) -> None:
    fault, cause = FATAL[kind]
    sleeps: list[float] = []
    client = _client(sleeps, _after_page(storefront, 2, [{**fault, "times": MAX_ATTEMPTS}]), timeout=0.3)
    with pytest.raises(StorefrontError) as caught:
        _extract(tmp_path, client)
    message = str(caught.value)
    assert not isinstance(caught.value, PermanentError), "retryable by Airflow"
    assert storefront.base_url in message
    assert f"giving up after {MAX_ATTEMPTS} attempts" in message
    assert cause in message, message
    assert len(sleeps) == MAX_ATTEMPTS - 1
    assert _staged_rows(tmp_path) == [], "nothing of the partly read window was staged"


def test_orders_drifting_during_paging_are_all_read_once(storefront: SandboxStorefront, tmp_path: Path) -> None:
    """``drift``: orders already read are modified (to the window's last second) mid-scan."""
    sleeps: list[float] = []
    rows = _extract(tmp_path, _client(sleeps, _after_page(storefront, 2, [{"type": "drift", "count": 4}])))
    assert storefront.pending_faults == []
    moved = [row for row in rows if row["date_modified_gmt"] == SHOP_NOW.strftime("%Y-%m-%dT%H:%M:%S")]
    assert len(moved) >= 4, "the drift really moved orders ahead of the cursor"
    assert _versions(rows) == EXPECTED  # a bare modification-time bump is no new version
    assert len(rows) == len({row["id"] for row in rows})


def test_order_edited_during_paging_is_read_in_its_latest_version(
    storefront: SandboxStorefront, tmp_path: Path
) -> None:
    first = min(ORDERS, key=lambda o: (o["date_modified_gmt"], o["id"]))  # on page 1

    def edit(pages: int, _seen: int, _estimate: int | None) -> None:
        if pages == 3:  # a shop admin edits it through the REST API while we page
            response = requests.put(f"{storefront.base_url}/wp-json/wc/v3/orders/{first['id']}",
                                    json={"customer_note": "Please ring twice"}, auth=(KEY, SECRET), timeout=5)
            response.raise_for_status()

    rows = _extract(tmp_path, _client([], edit))
    by_id = {row["id"]: row for row in rows}
    assert by_id[first["id"]]["customer_note"] == "Please ring twice"
    clean_after = _extract(tmp_path / "after", _client([]))
    assert _versions(rows) == _versions(clean_after) != EXPECTED
    assert {oid for oid, _ in _versions(rows)} == {oid for oid, _ in EXPECTED}


# --------------------------------------------------------------------------------------------
# SFTP
# --------------------------------------------------------------------------------------------


@pytest.fixture
def proxy(sshd: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's OpenSSH sshd; connection ``backend_proxy`` uses it."""
    with FaultProxy(sshd.host, sshd.port) as fault_proxy:
        name, value = sshd.airflow_conn_env(STORE.backend_conn_id, port=fault_proxy.port)
        monkeypatch.setenv(name, value)
        yield fault_proxy


def _backend() -> SftpBackend:
    return SftpBackend(STORE.backend_conn_id, conn_retry_attempts=1, io_timeout=20)


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_connection_dropped_mid_upload_then_the_retry_lands_the_exact_bytes(sshd: Any, proxy: FaultProxy) -> None:
    data = _payload(3 * MB, seed=1)
    folder = f"drop_upload_{uuid.uuid4().hex[:8]}"
    with _backend().session() as sftp:
        proxy.cut_after(256 * 1024, "up")  # some KB into the upload
        with pytest.raises(BackendError) as caught:
            sftp.upload_atomic(io.BytesIO(data), folder, "orders.csv")
    assert proxy.cuts == 1
    assert ".orders.csv.part" in str(caught.value) and not isinstance(caught.value, PermanentError)
    remote = sshd.root / folder
    assert set(_names(remote)) <= {".orders.csv.part"}, "no final file, at most the part"
    if _names(remote):
        assert (remote / ".orders.csv.part").stat().st_size < len(data)

    with _backend().session() as sftp:  # the task's retry
        sftp.upload_atomic(io.BytesIO(data), folder, "orders.csv")
    assert _names(remote) == ["orders.csv"]
    assert (remote / "orders.csv").read_bytes() == data


@pytest.mark.parametrize("cut_after", [0, 8 * 1024], ids=["at-next-read", "mid-reply"])
def test_connection_dropped_mid_listing_is_an_error_not_a_short_list(
    sshd: Any, proxy: FaultProxy, cut_after: int
) -> None:
    folder = sshd.root / f"drop_list_{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    # random names: the hook compresses SSH traffic, and the reply must span many packets
    names = sorted(f"status_{uuid.uuid4().hex}{uuid.uuid4().hex}.csv" for _ in range(1000))
    for name in names:
        (folder / name).write_bytes(b"")
    with _backend().session() as sftp:
        proxy.cut_after(cut_after, "down")
        with pytest.raises(BackendError) as caught:
            sftp.listdir(folder.name)
    assert proxy.cuts == 1
    assert f"listdir {folder.name}" in str(caught.value)
    with _backend().session() as sftp:
        before = proxy.forwarded["down"]
        assert sftp.listdir(folder.name) == names
        assert proxy.forwarded["down"] - before > 4 * cut_after, "the cut was inside the reply"


def test_disk_full_is_a_clear_error_and_the_retry_after_space_frees_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _payload(2 * MB, seed=2)
    with DiskFullSftpServer(tmp_path / "root", tmp_path / "keys", capacity=512 * 1024) as server:
        monkeypatch.setenv("AIRFLOW_CONN_BACKEND_FULL", json.dumps(server.airflow_connection()))
        backend = SftpBackend("backend_full", conn_retry_attempts=1, io_timeout=20)
        with backend.session() as sftp, pytest.raises(BackendError) as caught:
            sftp.upload_atomic(io.BytesIO(data), "inbound", "orders.csv")
        message = str(caught.value)
        assert NO_SPACE in message and ".orders.csv.part" in message, message
        assert server.refused >= 1
        assert _names(server.root / "inbound") == [], "neither the file nor a part is left"

        server.capacity = None  # space freed
        with backend.session() as sftp:
            sftp.upload_atomic(io.BytesIO(data), "inbound", "orders.csv")
        assert _names(server.root / "inbound") == ["orders.csv"]
        assert (server.root / "inbound" / "orders.csv").read_bytes() == data


def test_export_load_dropped_mid_upload_then_retried_delivers_each_order_once(
    sshd: Any, proxy: FaultProxy, tmp_path: Path
) -> None:
    from airflow.sdk import ObjectStoragePath

    rng = random.Random(3)  # notes that SSH compression cannot shrink much
    orders = [make_order(str(i), customer_note=rng.randbytes(100).hex()) for i in range(1, 801)]
    staging = export.run_dir(ObjectStoragePath(f"file://{tmp_path / 'staging'}"), STORE.id, WINDOW, "run_a")
    deliverable = staging / export.DELIVERABLE_FILE
    deliverable.write_text("".join(json.dumps(order_record(o)) + "\n" for o in orders))
    ledger = Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)
    inbound = sshd.root / STORE.backend.inbound_dir

    def load() -> dict[str, Any]:
        return export.load(STORE, WINDOW, "run_a", staging, deliverable, ledger.deliveries, _backend())

    cut = 64 * 1024
    proxy.cut_after(cut, "up")  # past the SSH handshake (a few KB), inside the orders file
    with pytest.raises(BackendError):
        load()
    assert proxy.cuts == 1
    assert [n for n in _names(inbound) if not n.startswith(".")] == [], "no final file after the drop"
    assert ledger.deliveries.delivered(STORE.id) == []

    before = proxy.forwarded["up"]
    result = load()  # Airflow's retry of the task
    assert proxy.forwarded["up"] - before > cut + cut // 2, "the cut really was inside the file"
    files = _names(inbound)
    assert result["delivered"] == len(orders) and result["files"] == files and len(files) == 1
    assert sorted(int(d["order_id"]) for d in ledger.deliveries.delivered(STORE.id)) == list(range(1, 801))
    rows = (inbound / files[0]).read_text().splitlines()[1:]
    order_ids = [row.split(",")[1] for row in rows]
    assert len(order_ids) == 2 * len(orders) and sorted(set(order_ids), key=int) == [str(i) for i in range(1, 801)]
