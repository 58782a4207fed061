"""Issue 6, security: pinned SFTP host key, TLS verification, no secret in anything written,
safe file names from outside data, and a least-privilege SFTP account.

Already proven elsewhere through the real parts (not repeated here):
* tests/integration/test_sftp_transfer.py — a changed ed25519 key of the same OpenSSH server is
  refused at once (one connect); no ``host_key`` / ``no_host_key_check`` / a bare base64 key is a
  ConfigError before any traffic;
* tests/integration/test_export_dag.py — a changed host key fails the export DAG run at once;
* tests/unit/test_woocommerce_client.py — ``verify: false`` is refused; a self-signed server is
  refused without retry by the read client (a fake store).
"""

from __future__ import annotations

import base64
import io
import json
import re
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit

import paramiko
import pendulum
import pytest

from order_integration.backend.sftp import SftpBackend
from order_integration.exceptions import BackendAuthError, ConfigError, PermanentError, StorefrontAuthError
from order_integration.storefronts.woocommerce import WooCommerceClient
from order_integration.storefronts.woocommerce_products import WooCommerceStock
from order_integration.storefronts.woocommerce_writes import WooCommerceWriter
from sandbox.generator import generate_orders
from sandbox.sftp_server import EmbeddedSftpServer
from sandbox.storefront import SandboxStorefront
from tests.support.sshd import LeastPrivilegeSshd, Sshd
from tests.support.tls import self_signed

pytestmark = pytest.mark.faults

DAY = pendulum.datetime(2026, 11, 2, tz="UTC")


@pytest.fixture
def connect_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Every paramiko connect attempt and every key offered to a server (still done for real)."""
    calls: dict[str, list] = {"connect": [], "auth": []}
    connect, auth = paramiko.SSHClient.connect, paramiko.Transport.auth_publickey

    def counting_connect(self, hostname, *args, **kwargs):
        calls["connect"].append((hostname, kwargs.get("port")))
        return connect(self, hostname, *args, **kwargs)

    def counting_auth(self, username, key, *args, **kwargs):
        calls["auth"].append(username)
        return auth(self, username, key, *args, **kwargs)

    monkeypatch.setattr(paramiko.SSHClient, "connect", counting_connect)
    monkeypatch.setattr(paramiko.Transport, "auth_publickey", counting_auth)
    return calls


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------------------------------------
# 1. host key: another server (embedded asyncssh) than the pinned one (OpenSSH)
# ------------------------------------------------------------------------------------------------


def _ecdsa_public(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "256", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


@pytest.mark.parametrize("pinned", ["openssh_ed25519", "ecdsa"])
def test_another_server_than_the_pinned_one_is_refused_at_once(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connect_calls: dict[str, list], pinned: str
) -> None:
    """The embedded asyncssh server (its own ed25519 key) answers where the connection pins the
    OpenSSH server's key — or an ECDSA key, another type than the server offers. Refused on the
    first connect, naming the host, before our key is offered and before any upload."""
    host_key = sshd.host_key if pinned == "openssh_ed25519" else _ecdsa_public(tmp_path / "ecdsa")
    with EmbeddedSftpServer(tmp_path / "root", tmp_path / "keys") as impostor:
        conn = impostor.airflow_connection()
        assert conn["extra"]["host_key"] != host_key
        conn["extra"]["host_key"] = host_key
        monkeypatch.setenv("AIRFLOW_CONN_BACKEND_IMPOSTOR", json.dumps(conn))
        # the default budget: 3 attempts
        with pytest.raises(BackendAuthError) as err, SftpBackend("backend_impostor").session() as session:
            session.upload_atomic(io.BytesIO(b"order data"), "inbound", "orders.csv")
        where = f"{impostor.host}:{impostor.port}"
        assert _files(impostor.root) == []
    message = str(err.value)
    assert where in message and "does not match the pinned host_key" in message, message
    assert isinstance(err.value, PermanentError)
    assert connect_calls["connect"] == [(impostor.host, impostor.port)]  # no retry
    assert connect_calls["auth"] == []  # our key was never offered to the impostor


# ------------------------------------------------------------------------------------------------
# 2. TLS: the sandbox storefront behind a self-signed certificate
# ------------------------------------------------------------------------------------------------

KEY, SECRET = "ck_tls_test", "cs_tls_test"


@pytest.fixture
def tls_shop(tmp_path: Path) -> Iterator[tuple[SandboxStorefront, Path]]:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    orders = generate_orders(3, start=DAY.add(hours=10), end=DAY.add(hours=11), seed=3)
    with SandboxStorefront(orders, consumer_key=KEY, consumer_secret=SECRET, ssl_context=context) as shop:
        yield shop, cert


def _set_storefront(monkeypatch: pytest.MonkeyPatch, conn_id: str, host: str, **extra: object) -> None:
    conn: dict[str, object] = {"conn_type": "http", "host": host, "login": KEY, "password": SECRET}
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def _read(client_cls: type, conn_id: str, sleeps: list[float]) -> object:
    """One call of each client kind: order scan (export), order read (status sync), SKU look-up
    (inventory sync)."""
    client = client_cls(conn_id, sleep=sleeps.append, timeout=5)
    if client_cls is WooCommerceClient:
        return list(client.iter_orders(DAY.add(hours=10), DAY.add(hours=11)))
    if client_cls is WooCommerceWriter:
        with client:
            return client.get_order(1001)
    with client:
        return client.lookup(["NO-SUCH-SKU"])


@pytest.mark.parametrize("client_cls", [WooCommerceClient, WooCommerceWriter, WooCommerceStock])
def test_self_signed_storefront_is_refused_before_credentials_are_sent(
    tls_shop: tuple[SandboxStorefront, Path], monkeypatch: pytest.MonkeyPatch, client_cls: type
) -> None:
    shop, cert = tls_shop
    assert shop.base_url.startswith("https://")
    _set_storefront(monkeypatch, "storefront_tls", shop.base_url)
    sleeps: list[float] = []
    with pytest.raises(StorefrontAuthError) as err:
        _read(client_cls, "storefront_tls", sleeps)
    message = str(err.value)
    assert "TLS certificate refused" in message and "storefront_tls" in message, message
    assert isinstance(err.value, PermanentError)
    assert sleeps == []  # no retry
    # The handshake failed in accept(): no request (so no Authorization header) reached WordPress.
    assert shop.request_log == []
    assert SECRET not in message

    # Control: the same server with its certificate trusted (the CA installed in the connection)
    # is reached, with the credentials — so the refusal above was the certificate's.
    _set_storefront(monkeypatch, "storefront_tls", shop.base_url, verify=str(cert))
    _read(client_cls, "storefront_tls", sleeps)
    assert shop.request_log and all(status == 200 for _m, _p, status in shop.request_log)


@pytest.mark.parametrize("extra", [{"verify": False}, {"verify": "false"}, {"verify": "0"}, {"verify": ""},
                                   {"verify_ssl": False}, {"verify_ssl": "False"}])
def test_every_spelling_of_verification_off_is_refused(
    tls_shop: tuple[SandboxStorefront, Path], monkeypatch: pytest.MonkeyPatch, extra: dict
) -> None:
    shop, _cert = tls_shop
    _set_storefront(monkeypatch, "storefront_noverify", shop.base_url, **extra)
    for client_cls in (WooCommerceClient, WooCommerceWriter, WooCommerceStock):
        with pytest.raises(ConfigError, match="disables TLS verification"):
            _read(client_cls, "storefront_noverify", [])
    assert shop.request_log == []


# ------------------------------------------------------------------------------------------------
# 2b. no secret over plain HTTP (issue 13, defect 4): http:// only to loopback, no redirect away
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL a client hands to the transport; a URL outside loopback is not connected to."""
    import requests.adapters

    urls: list[str] = []
    real = requests.adapters.HTTPAdapter.send

    def recording_send(self, request, *args, **kwargs):
        urls.append(request.url)
        host = (urlsplit(request.url).hostname or "").lower()
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise requests.exceptions.ConnectionError(f"test: no network to {host}")
        return real(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", recording_send)
    return urls


@pytest.mark.parametrize("host", ["http://shop.example.com", "HTTP://shop.example.com", "http://10.1.2.3:8081",
                                  "http://127.0.0.1.nip.io:8081", "http://localhost.example.com",
                                  "http://[2001:db8::1]:8081", "http://0.0.0.0:8081", "ftp://shop.example.com"])
@pytest.mark.parametrize("client_cls", [WooCommerceClient, WooCommerceWriter, WooCommerceStock])
def test_plain_http_to_a_remote_store_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch, sent: list[str], client_cls: type, host: str
) -> None:
    _set_storefront(monkeypatch, "storefront_plain", host)
    sleeps: list[float] = []
    with pytest.raises(ConfigError) as err:
        _read(client_cls, "storefront_plain", sleeps)
    message = str(err.value)
    assert "storefront_plain" in message and "https://" in message, message
    assert SECRET not in message
    assert sent == [] and sleeps == []


@pytest.mark.parametrize("loopback", ["127.0.0.1", "localhost"])
def test_plain_http_to_loopback_is_allowed(monkeypatch: pytest.MonkeyPatch, loopback: str) -> None:
    orders = generate_orders(3, start=DAY.add(hours=10), end=DAY.add(hours=11), seed=3)
    with SandboxStorefront(orders, consumer_key=KEY, consumer_secret=SECRET) as shop:
        _set_storefront(monkeypatch, "storefront_local", f"http://{loopback}:{shop.port}")
        for client_cls in (WooCommerceClient, WooCommerceWriter, WooCommerceStock):
            _read(client_cls, "storefront_local", [])
        assert shop.request_log and all(status == 200 for _m, _p, status in shop.request_log)


def test_loopback_is_127_slash_8_ipv6_one_and_localhost_only() -> None:
    from order_integration.storefronts.woocommerce import check_store_url

    for url in ("http://127.0.0.1", "http://127.255.0.9:81/shop", "http://[::1]:8081", "http://LocalHost:1/",
                "https://shop.example.com", "https://10.0.0.1:8443/wp"):
        check_store_url(url, "c")
    for url in ("http://shop.example.com", "http://[::ffff:10.0.0.1]", "http://2130706433", "http://128.0.0.1",
                "http://", "https://", "shop.example.com"):
        with pytest.raises(ConfigError, match="'c'"):
            check_store_url(url, "c")


class _Redirector:
    """An HTTPS server (self-signed, trusted by the test) that answers every request with a
    redirect to ``target`` + the same path and query, and records what it was asked."""

    def __init__(self, context: ssl.SSLContext, target: str, status: int = 301) -> None:
        import http.server
        import threading

        outer = self
        self.requests: list[tuple[str, str, bool]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests.append((self.command, self.path, "Authorization" in self.headers))
                self.send_response(status)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Redirector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("where", ["plain_http", "other_host"])
@pytest.mark.parametrize("client_cls", [WooCommerceClient, WooCommerceWriter, WooCommerceStock])
def test_a_redirect_away_from_the_https_store_is_refused_not_followed(
    tls_shop: tuple[SandboxStorefront, Path], monkeypatch: pytest.MonkeyPatch, client_cls: type, where: str,
    status: int,
) -> None:
    """Before issue 13 the clients followed ``https://store → http://…`` (requests only drops the
    Authorization header on the way): the orders came back over plain HTTP."""
    secure, cert = tls_shop
    orders = generate_orders(3, start=DAY.add(hours=10), end=DAY.add(hours=11), seed=3)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, cert.with_name("key.pem"))
    with SandboxStorefront(orders, consumer_key=KEY, consumer_secret=SECRET) as plain:
        # other_host: the same HTTPS sandbox under another name (its certificate is for 127.0.0.1 only,
        # but the refusal must come before any connection to it)
        target = plain.base_url if where == "plain_http" else f"https://localhost:{secure.port}"
        with _Redirector(context, target, status) as redirector:
            _set_storefront(monkeypatch, "storefront_redirect", redirector.base_url, verify=str(cert))
            sleeps: list[float] = []
            with pytest.raises(ConfigError) as err:
                _read(client_cls, "storefront_redirect", sleeps)
    message = str(err.value)
    assert "storefront_redirect" in message and "not followed" in message, message
    assert ("plain HTTP" in message) == (where == "plain_http"), message
    assert SECRET not in message
    assert len(redirector.requests) == 1 and sleeps == []  # refused at once, no retry
    assert plain.request_log == [] and secure.request_log == []  # nothing reached the target


def test_a_redirect_inside_the_store_is_still_followed(
    tls_shop: tuple[SandboxStorefront, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: a 302 back to the store's own origin is followed (same scheme, host and port is
    the rule), so the refusals above are about where the redirect pointed."""
    import requests.adapters

    secure, cert = tls_shop
    real = requests.adapters.HTTPAdapter.send
    hops: list[str] = []

    def redirect_once(self, request, *args, **kwargs):
        if not hops:
            hops.append(request.url)
            response = requests.Response()
            response.status_code, response.url, response.request = 302, request.url, request
            response.headers["Location"] = request.url
            response._content = b""
            return response
        return real(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", redirect_once)
    _set_storefront(monkeypatch, "storefront_same", secure.base_url, verify=str(cert))
    assert len(_read(WooCommerceClient, "storefront_same", [])) == 3
    assert len(hops) == 1 and len(secure.request_log) == 1


# ------------------------------------------------------------------------------------------------
# 4. file names built from outside data
# ------------------------------------------------------------------------------------------------

HOSTILE = ["..", ".", "../../x", "/etc/passwd", "a/../../b", "CON", "a\x00b", "a\nb", "x" * 300, "ünïcödé—名前",
           ".hidden", "-rf", " "]
OUR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


@pytest.mark.parametrize("run_id", HOSTILE, ids=range(len(HOSTILE)))
def test_staging_folder_of_a_run_stays_in_its_window_folder(tmp_path: Path, run_id: str) -> None:
    """Airflow allows dots in run ids (``..`` is one a REST caller may choose), so the staging
    folder named after the run id must neither climb up nor hide."""
    from airflow.sdk import ObjectStoragePath

    from order_integration import export
    from order_integration.windows import Window

    window = Window(DAY.add(hours=10), DAY.add(hours=11))
    base = ObjectStoragePath(f"file://{tmp_path / 'staging'}")
    run = export.run_dir(base, "demo", window, run_id[:250])  # Airflow's run_id column holds 250
    window_dir = (tmp_path / "staging" / "demo" / window.label).resolve()
    made = Path(run.path).resolve()
    assert made.parent == window_dir and made.is_dir()
    assert OUR_NAME.fullmatch(made.name) and len(made.name.encode()) <= 255, made.name


def test_staging_folders_of_two_run_ids_never_collide(tmp_path: Path) -> None:
    """Sanitising alone mapped ``a:b``, ``a+b``, ``a b`` and ``a_b`` to one folder, where two
    runs would read and overwrite each other's staged orders (issue 13, defect 5)."""
    from airflow.sdk import ObjectStoragePath

    from order_integration import export
    from order_integration.windows import Window

    window = Window(DAY.add(hours=10), DAY.add(hours=11))
    base = ObjectStoragePath(f"file://{tmp_path / 'staging'}")
    run_ids = ["a:b", "a+b", "a b", "a_b", "a__b", ".a_b", "-a_b", "x" * 250, "x" * 249 + "y",
               "manual__2026-11-02T11:00:00+00:00", "manual__2026-11-02T11:00:00-00:00"]
    folders = {run_id: Path(export.run_dir(base, "demo", window, run_id).path) for run_id in run_ids}
    assert len(set(folders.values())) == len(run_ids), folders
    # every task and every retry of one run finds the same folder
    assert Path(export.run_dir(base, "demo", window, "a:b").path) == folders["a:b"]
    # still readable: the sanitised run id, then a short digest of the raw one
    assert folders["manual__2026-11-02T11:00:00+00:00"].name.startswith("manual__2026-11-02T11_00_00_00_00_")
    assert all(OUR_NAME.fullmatch(f.name) and len(f.name.encode()) <= 255 for f in folders.values())


def test_backend_file_names_that_point_elsewhere_are_not_ours() -> None:
    from order_integration.backend.status_files import list_status_files
    from order_integration.backend.stock_files import list_stock_files

    listing = ["a.csv", "../up.csv", "x/../../up.csv", "/etc/cron.d/x.csv", "nul\x00.csv", ".csv", ".b.csv.part",
               "CON.csv", "line\nbreak.csv", "ü.csv"]
    expected = ["CON.csv", "a.csv", "line\nbreak.csv", "ü.csv"]
    assert list_status_files(listing) == expected
    assert list_stock_files(listing) == expected


@pytest.mark.parametrize("name", ["x" * 251 + ".csv", "ü" * 125 + ".csv", "a.csv"])
def test_a_moved_name_and_its_report_fit_the_file_system(name: str) -> None:
    from order_integration.status_sync import ERRORS_SUFFIX, free_name

    for with_errors in (False, True):
        first = free_name(set(), name, with_errors=with_errors)
        second = free_name({first, first + ERRORS_SUFFIX}, name, with_errors=with_errors)
        for got in (first, second):
            longest = f".{got}{ERRORS_SUFFIX}.part" if with_errors else got
            assert got.endswith(".csv") and len(longest.encode()) <= 255, (got, with_errors)
        assert second != first
        if len(name) < 100:
            assert first == name


def _store_for(sshd: Sshd, shop: SandboxStorefront, tmp_path: Path, store_id: str, monkeypatch: pytest.MonkeyPatch):
    """A store config (the harness's) wired to ``sshd`` and ``shop``; its connections in the env."""
    from order_integration.config import load_config
    from tests.support.airflow_run import ExportHarness

    harness = ExportHarness(store_id=store_id, airflow_home=tmp_path / "home", work_dir=tmp_path / store_id,
                            storefront_url=shop.base_url, storefront_key=KEY, storefront_secret=SECRET,
                            sftp_connection=sshd.airflow_connection(), sftp_root=sshd.root)
    for name, value in harness.env().items():
        if name.startswith("AIRFLOW_CONN_"):
            monkeypatch.setenv(name, value)
    return harness, load_config(harness.config_path).store(store_id)


BACKEND_NAMES = ["CON.csv", "line\nbreak.csv", "-rf.csv", " space.csv", "ü" * 125 + ".csv",
                 "x" * 251 + ".csv", "taken.csv"]


@pytest.mark.parametrize("kind", ["status", "stock"])
def test_hostile_backend_file_names_end_in_error_inside_the_folder(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Files the backend names (up to NAME_MAX bytes, unicode, newline, device-like) that hold
    only bad lines all move to ``error/`` beside their report, inside the store's folder — a
    name too long for the report's own name is shortened instead of failing every run."""
    from order_integration import inventory, status_sync
    from order_integration.ledger import Ledger, sqlite_engine

    store_id = f"names_{kind}"
    with SandboxStorefront([], consumer_key=KEY, consumer_secret=SECRET) as shop:
        harness, store = _store_for(sshd, shop, tmp_path, store_id, monkeypatch)
        folder = harness.outbound_dir if kind == "status" else harness.stock_dir
        (folder / "error").mkdir(parents=True)
        (folder / "error" / "taken.csv").write_text("an older file of that name\n")
        if kind == "status":
            bad = "order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note\n" \
                  "1001,dispatched,2026-11-02T10:00:00Z,,,,,,\n"
        else:
            bad = "sku,quantity,as_of\nSKU-1,-3,2026-11-02T10:00:00Z\n"
        for name in BACKEND_NAMES:
            (folder / name).write_text(bad)
        before = set(_files(sshd.root))
        ledger = Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)
        with SftpBackend(store.backend_conn_id, conn_retry_attempts=1).session() as sftp:
            if kind == "status":
                with WooCommerceWriter(store.storefront_conn_id) as writer:
                    result = status_sync.sync_outbound(store, sftp, writer, ledger.status_events)
                moved = {f.name: (f.moved_to, f.errors_file) for f in result.files}
            else:
                with WooCommerceStock(store.storefront_conn_id) as stock:
                    stock_result = inventory.sync_stock_dir(store, sftp, stock, ledger.stock_levels)
                moved = {f.name: (f.moved_to, f.errors_file) for f in stock_result.files}
    assert sorted(moved) == sorted(BACKEND_NAMES)
    error_dir = folder / "error"
    for name, (moved_to, errors_file) in moved.items():
        target = sshd.root / moved_to
        assert target.parent == error_dir and target.is_file(), (name, moved_to)
        assert errors_file == f"{moved_to}.errors.json" and (sshd.root / errors_file).is_file()
        assert json.loads((sshd.root / errors_file).read_text())["file"] == name
        assert len(Path(errors_file).name.encode()) <= 255
        if len(name.encode()) <= 200 and name != "taken.csv":
            assert target.name == name  # a name that fits is kept as the backend gave it
    assert moved["taken.csv"][0].endswith("/error/taken-1.csv")
    assert (error_dir / "taken.csv").read_text() == "an older file of that name\n"
    assert [p.name for p in folder.iterdir() if p.is_file()] == []
    created = set(_files(sshd.root)) - before
    prefix = str(folder.relative_to(sshd.root)) + "/error/"
    assert created and all(p.startswith(prefix) for p in created), sorted(created)


# ------------------------------------------------------------------------------------------------
# 3. canary secrets: one real export DAG run, one status sync, failures included; then search
#    everything written (4. rides along: the orders carry hostile names and numbers)
# ------------------------------------------------------------------------------------------------


def _canary_key(folder: Path, passphrase: str) -> tuple[str, str, list[str]]:
    """An encrypted ed25519 client key: (PEM text, public line, secret needles: the PEM's base64
    lines and the raw private key in hex and base64)."""
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    folder.mkdir()
    path = folder / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "canary", "-f", str(path)],
                   check=True)
    pem = path.read_text()
    raw = load_ssh_private_key(pem.encode(), password=passphrase.encode()).private_bytes_raw()
    needles = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    needles += [raw.hex(), base64.b64encode(raw).decode()]
    return pem, path.with_name("client_key.pub").read_text().strip(), needles


def _hostile(orders: list[dict]) -> None:
    """Storefront data that would be dangerous in a file name, in the first few orders."""
    orders[0]["number"] = "../../../etc/passwd"
    orders[1]["line_items"][0]["sku"] = "CON"
    orders[2]["billing"]["first_name"] = "Zoë\n2026-11-02 [error] injected"
    orders[3]["line_items"][0]["name"] = "/" * 300
    orders[4]["customer_note"] = "..\\..\\windows\\system32 ünïcödé 名前"


def _leaks(needles: dict[str, str], places: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(what, where) for what, needle in needles.items() for where, data in places.items()
            if needle.encode() in data]


def _written(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots for p in root.rglob("*") if p.is_file()}


STATUS_HEADER = "order_id,event,occurred_at,carrier,tracking_number,tracking_url,sku,quantity,note\n"


def test_canary_secrets_appear_in_nothing_written(
    sshd: Sshd, airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from order_integration import tasks
    from tests.support.airflow_run import ExportHarness

    caplog.set_level(logging.DEBUG)  # every logger, urllib3 and paramiko included
    uid, pp_uid, wrong_uid = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    key, secret = f"ck_canary_{uid[:6]}", f"cs_CANARY_{uid}/+="  # '/+=' change when URL-encoded
    wrong_secret, passphrase = f"cs_CANARY_WRONG_{wrong_uid}", f"pp_CANARY_{pp_uid}"
    pem, public, key_needles = _canary_key(tmp_path / "keys", passphrase)
    with sshd.authorized_keys_file.open("a") as fh:
        fh.write(public + "\n")
    sftp_conn = sshd.airflow_connection(extra={"key_file": None, "private_key": pem,
                                               "private_key_passphrase": passphrase})
    needles = {"secret": secret, "secret urlencoded": quote(secret, safe=""), "secret form": quote_plus(secret),
               "secret uuid": uid, "wrong secret uuid": wrong_uid, "passphrase uuid": pp_uid,
               "basic auth": base64.b64encode(f"{key}:{secret}".encode()).decode(),
               "wrong basic auth": base64.b64encode(f"{key}:{wrong_secret}".encode()).decode(),
               **{f"private key {i}": n for i, n in enumerate(key_needles)}}

    orders = generate_orders(40, start=DAY.add(hours=10), end=DAY.add(hours=11), seed=66)
    _hostile(orders)
    before_backend = set(_files(sshd.root))
    with SandboxStorefront(orders, consumer_key=key, consumer_secret=secret,
                           clock=lambda: DAY.add(hours=11, minutes=30)) as shop:
        harness = ExportHarness(
            store_id="sec_canary", airflow_home=airflow_home, work_dir=tmp_path / "work",
            storefront_url=shop.base_url, storefront_key=key, storefront_secret=secret,
            sftp_connection=sftp_conn, sftp_root=sshd.root,
            store_overrides={"validation": {"max_quarantine_ratio": 1.0}})
        env = harness.env()
        # The search finds the canaries where they do belong: the connections.
        assert {w for w, _ in _leaks(needles, {"env": json.dumps(env).encode()})} >= {
            "secret", "secret uuid", "passphrase uuid", "private key 0"}

        # -- one real export DAG run; its first storefront request fails (500, retried)
        shop.inject_faults([{"type": "500", "times": 1}])
        run = harness.run("2026-11-02T11:00:00+00:00")
        assert run.ok, run.output[-5000:]
        assert run.summary["delivered"] >= 30 and run.summary["files"], run.summary
        assert [s for _m, _p, s in shop.request_log][:2] == [500, 200]  # the canary secret was accepted
        assert "HTTP 500" in run.output  # the failed attempt was logged
        delivered = [oid for oid, _v in harness.delivered_versions()]

        # -- status sync, the DAG's task functions in this process: a 500 on a write (retried),
        #    a file with bad lines (-> error/ with its report), then refused credentials (401)
        for name, value in env.items():
            if name.startswith("AIRFLOW_CONN_") or name == "ORDER_INTEGRATION_CONFIG":
                monkeypatch.setenv(name, value)
        monkeypatch.setenv("AIRFLOW_HOME", str(airflow_home))  # the ledger the DAG run used
        harness.outbound_dir.mkdir(parents=True, exist_ok=True)
        (harness.outbound_dir / "status_1.csv").write_text(
            STATUS_HEADER
            + f"{delivered[0]},accepted,2026-11-02T11:10:00Z,,,,,,\n"
            + f"{delivered[1]},shipped,2026-11-02T11:11:00Z,DHL,TRK-1,https://t.example/TRK-1,,,\n"
            + f"{delivered[2]},dispatched,2026-11-02T11:12:00Z,,,,,,\n"
            + "999999,cancelled,2026-11-02T11:13:00Z,,,,,,\n")
        shop.inject_faults([{"type": "500", "method": "PUT", "times": 1}])
        synced = tasks.sync_status_files("sec_canary")
        assert synced["error_files"] == ["status_1.csv"] and synced["counts"]["applied"] == 2, synced
        assert any(m == "PUT" and s == 500 for m, _p, s in shop.request_log)

        (harness.outbound_dir / "status_2.csv").write_text(
            STATUS_HEADER + f"{delivered[3]},accepted,2026-11-02T11:20:00Z,,,,,,\n")
        monkeypatch.setenv(f"AIRFLOW_CONN_{store_conn('sec_canary')}", json.dumps(
            {"conn_type": "http", "host": shop.base_url, "login": key, "password": wrong_secret}))
        with pytest.raises(AirflowFailException, match="credentials refused") as refused:
            tasks.sync_status_files("sec_canary")
        assert shop.request_log[-1][2] == 401
        assert (harness.outbound_dir / "status_2.csv").exists()  # stays for the retry

    captured = capfd.readouterr()
    places = {
        **_written(airflow_home, harness.work_dir, sshd.root),
        "dags test output": run.output.encode(),
        "library log records": caplog.text.encode(),
        "captured stdout/stderr": (captured.out + captured.err).encode(),
        "401 error": str(refused.value).encode(),
    }
    # `dags test` prints the task logs (its output); XCom is in the metadata DB; the ledger too
    assert b"order export sec_canary" in places[str(airflow_home / "airflow.db")]
    assert any("order_ledger.db" in p for p in places)
    assert any(p.endswith(".errors.json") for p in places) and any("/staging/" in p for p in places)
    assert _leaks(needles, places) == []

    # 4. the names built from these orders are ours, and nothing landed outside the store's folders
    created = set(_files(sshd.root)) - before_backend
    ours = (harness.inbound_dir.name + "/", harness.outbound_dir.name + "/", harness.inbound_dir.name,
            harness.outbound_dir.name)
    assert created and all(p.startswith(ours) for p in created), sorted(created)
    pattern = re.compile(r"orders_sec_canary_\d{8}T\d{6}Z_\d{8}T\d{6}Z_[0-9a-f]{6,64}\.csv")
    assert harness.inbound_files() and all(pattern.fullmatch(p.name) for p in harness.inbound_files())
    staged = [p for p in (harness.work_dir / "staging").rglob("*")]
    assert staged and all(OUR_NAME.fullmatch(p.name) for p in staged), [p.name for p in staged]


def store_conn(store_id: str) -> str:
    return f"STOREFRONT_{store_id.upper()}"


# ------------------------------------------------------------------------------------------------
# 5. least privilege: the SFTP account writes to its store's folders and nowhere else
# ------------------------------------------------------------------------------------------------

OTHER_ACCOUNT_UID = 65533  # another store's SFTP account: no login needed, only an owner


@pytest.fixture
def jailed_sshd(tmp_path: Path) -> Iterator[LeastPrivilegeSshd]:
    reason = LeastPrivilegeSshd.available()
    if reason:
        pytest.skip(reason)
    with LeastPrivilegeSshd(tmp_path / "sshd").start() as server:
        yield server


def test_least_privilege_account_runs_export_and_syncs_but_writes_nowhere_else(
    jailed_sshd: LeastPrivilegeSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from airflow.sdk import ObjectStoragePath

    from order_integration import export, inventory, status_sync
    from order_integration.exceptions import BackendError
    from order_integration.ledger import Ledger, sqlite_engine
    from order_integration.windows import Window
    from tests.support.orders import make_order

    server = jailed_sshd
    orders = generate_orders(3, start=DAY.add(hours=10), end=DAY.add(hours=11), seed=5)
    with SandboxStorefront(orders, consumer_key=KEY, consumer_secret=SECRET) as shop:
        _harness, store = _store_for(server, shop, tmp_path, "lp_store", monkeypatch)
        b = store.backend
        server.provision(b.inbound_dir, b.outbound_dir, b.stock_dir)
        server.provision("inbound_other", uid=OTHER_ACCOUNT_UID)
        # the backend (root here) drops its files; the account only needs to read and move them
        (server.root / b.outbound_dir / "status.csv").write_text(
            STATUS_HEADER + "1001,cancelled,2026-11-02T11:10:00Z,,,,,,\n1002,dispatched,2026-11-02T11:10:00Z,,,,,,\n")
        (server.root / b.stock_dir / "stock.csv").write_text("sku,quantity,as_of\nSKU-1,-3,2026-11-02T10:00:00Z\n")
        ledger = Ledger(sqlite_engine(tmp_path / "ledger.db"), create=True)
        window = Window(DAY.add(hours=10), DAY.add(hours=11))
        staging = export.run_dir(ObjectStoragePath(f"file://{tmp_path / 'staging'}"), store.id, window, "manual__1")
        deliverable = staging / export.DELIVERABLE_FILE
        deliverable.write_text("".join(json.dumps(replace(make_order(str(i)), store_id=store.id).record()) + "\n"
                                       for i in (1001, 1002)))
        backend = SftpBackend(store.backend_conn_id, conn_retry_attempts=1)
        loaded = export.load(store, window, "manual__1", staging, deliverable, ledger.deliveries, backend)
        assert loaded["delivered"] == 2 and len(loaded["files"]) == 1
        with backend.session() as sftp:
            with WooCommerceWriter(store.storefront_conn_id) as writer:
                [status] = status_sync.sync_outbound(store, sftp, writer, ledger.status_events).files
            with WooCommerceStock(store.storefront_conn_id) as stock:
                [stocked] = inventory.sync_stock_dir(store, sftp, stock, ledger.stock_levels).files
            assert status.errors_file and stocked.errors_file  # error/ made and written, by the account

            inbound_file = f"{b.inbound_dir}/{loaded['files'][0]}"
            attempts = {
                "file at the chroot root": lambda: sftp.upload_atomic(io.BytesIO(b"x"), "", "evil.csv"),
                "folder at the chroot root": lambda: sftp.makedirs("evil"),
                "another store's folder": lambda: sftp.upload_atomic(io.BytesIO(b"x"), "inbound_other", "evil.csv"),
                "climbing out with ..": lambda: sftp.upload_atomic(io.BytesIO(b"x"), f"{b.inbound_dir}/../..", "e.csv"),
                "moving a file up": lambda: sftp.move(inbound_file, f"{b.inbound_dir}/../evil.csv"),
                "an absolute path": lambda: sftp.upload_atomic(io.BytesIO(b"x"), "/tmp", "evil.csv"),
            }
            for what, attempt in attempts.items():
                with pytest.raises(BackendError, match="Permission denied"):
                    attempt()
                    pytest.fail(f"{what} was allowed")
            assert sftp.exists(inbound_file)

    owned = {b.inbound_dir, b.outbound_dir, b.stock_dir}
    outside = [p for p in _files(server.root) if p.split("/")[0] not in owned]
    assert outside == ["inbound_other"]  # still empty
    assert not Path("/tmp/evil.csv").exists()
    assert {p.name for p in (server.root / b.outbound_dir / "error").iterdir()} == {"status.csv",
                                                                                    "status.csv.errors.json"}
    for path in (server.root / b.inbound_dir).iterdir():
        assert path.stat().st_uid == server.uid  # written by the account, not by root
