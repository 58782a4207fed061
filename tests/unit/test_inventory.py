"""Inventory sync in this process: the sandbox storefront (HTTP), the embedded SFTP server (real
SSH through SFTPHook) and a temporary SQLite ledger — the newest-wins rules, request counts and
what a failure leaves behind."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from order_integration.backend.sftp import SftpBackend, SftpSession
from order_integration.backend.stock_files import parse_stock_file
from order_integration.config import BackendConfig, StoreConfig
from order_integration.exceptions import InvariantViolation, PermanentError, StorefrontError
from order_integration.inventory import (
    OUTCOMES,
    FileResult,
    apply_stock_rows,
    sync_stock_dir,
    sync_stock_file,
)
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.storefronts.woocommerce_products import (
    StockUpdate,
    WooCommerceStock,
    catalog_item,
    sku_chunks,
)
from sandbox.sftp_server import EmbeddedSftpServer
from sandbox.storefront import SandboxStorefront, generate_products

pytestmark = pytest.mark.unit

KEY, SECRET = "ck_inventory", "cs_inventory"
SHOP_CONN, SFTP_CONN = "inventory_shop", "inventory_backend"
STORE = "inv"
T1, T2, T3 = "2026-11-29T10:00:00Z", "2026-11-29T11:00:00Z", "2026-11-29T12:00:00Z"
#: SKU-1..SKU-150 simple (stock n % 50), SKU-151..SKU-210 variations of two variable products.
CATALOGUE = [
    *generate_products(150, 2, 30),
    {"id": 90001, "sku": "UNMANAGED-1", "manage_stock": False},
    {"id": 90010, "type": "variable", "sku": "PARENT-STOCK", "manage_stock": True, "stock_quantity": 9,
     "variations": [{"id": 90011, "sku": "BY-PARENT-1", "manage_stock": False}]},
    {"id": 90020, "sku": "Case-Sku"},
    {"id": 90030, "sku": "TWIN", "manage_stock": True, "stock_quantity": 1},
    {"id": 90031, "sku": "TWIN", "manage_stock": True, "stock_quantity": 1},
    {"id": 90040, "sku": "A,B", "manage_stock": True, "stock_quantity": 3},
]


def stock_csv(*rows: tuple[str, int | str, str]) -> bytes:
    return ("sku,quantity,as_of\n" + "".join(f"{s},{q},{t}\n" for s, q, t in rows)).encode()


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSftpServer]:
    base = tmp_path_factory.mktemp("inventory_sftp")
    with EmbeddedSftpServer(base / "root", base / "keys") as server:
        yield server


@dataclass
class Env:
    shop: SandboxStorefront
    store: StoreConfig
    session: SftpSession
    ledger: Ledger
    stock_dir: Path

    def client(self, **kwargs) -> WooCommerceStock:
        return WooCommerceStock(SHOP_CONN, timeout=10, sleep=lambda _s: None, **kwargs)

    def drop(self, name: str, data: bytes) -> None:
        self.stock_dir.mkdir(parents=True, exist_ok=True)
        (self.stock_dir / name).write_bytes(data)

    def sync(self, name: str, data: bytes | None = None, *, store: StoreConfig | None = None,
             client: WooCommerceStock | None = None) -> FileResult:
        if data is not None:
            self.drop(name, data)
        with client or self.client() as c:
            return sync_stock_file(store or self.store, name, self.session, c, self.ledger.stock_levels)

    def stock(self, sku: str) -> int | None:
        item = self.shop.product_by_sku(sku)
        assert item is not None, sku
        return item["stock_quantity"]

    def requests(self) -> list[tuple[str, str, int]]:
        return [r for r in self.shop.request_log if "/products" in r[1]]

    def writes(self) -> list[tuple[str, str, int]]:
        return [r for r in self.requests() if r[0] != "GET"]

    def files(self, sub: str) -> list[str]:
        folder = self.stock_dir / sub
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, sftp_server: EmbeddedSftpServer, tmp_path: Path) -> Iterator[Env]:
    shop = SandboxStorefront(products=CATALOGUE, consumer_key=KEY, consumer_secret=SECRET).start()
    monkeypatch.setenv(f"AIRFLOW_CONN_{SHOP_CONN.upper()}", json.dumps(
        {"conn_type": "http", "host": shop.base_url, "login": KEY, "password": SECRET}))
    monkeypatch.setenv(f"AIRFLOW_CONN_{SFTP_CONN.upper()}", json.dumps(sftp_server.airflow_connection()))
    stock_dir = f"stock_{uuid.uuid4().hex[:8]}"
    store = StoreConfig(id=STORE, storefront_conn_id=SHOP_CONN, backend_conn_id=SFTP_CONN,
                        backend=BackendConfig(stock_dir=stock_dir))
    try:
        with SftpBackend(SFTP_CONN, conn_retry_attempts=1).session() as session:
            yield Env(shop, store, session, Ledger(sqlite_engine(tmp_path / "l.db"), create=True), sftp_server.root / stock_dir)
    finally:
        shop.stop()


def accounted(result: FileResult) -> None:
    assert set(result.counts) == set(OUTCOMES)
    assert sum(result.counts.values()) == result.rows


# ------------------------------------------------------------------------------------------------
# the client
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\u0663", "\u00b2", "-3", "0", "3.0", str(2**64), True])
def test_a_product_id_that_is_not_ascii_digits_is_no_catalogue_item(bad: object) -> None:
    """``٣`` passed ``str.isdigit`` and ``int`` made it product 3; ``²`` crashed in ``int``."""
    assert catalog_item({"id": bad, "sku": "A", "type": "simple"}) is None
    assert catalog_item({"id": 9, "parent_id": bad, "sku": "A", "type": "variation"}) is None


@pytest.mark.parametrize(("raw", "quantity"), [("\u00b2", None), ("\u0663", None), ("1e3", None), ("-4", -4),
                                               (" 12 ", 12), (7, 7), (7.0, 7), (None, None)])
def test_a_stock_quantity_is_read_from_ascii_digits_only(raw: object, quantity: int | None) -> None:
    item = catalog_item({"id": 3, "sku": "A", "type": "simple", "stock_quantity": raw})
    assert item is not None and item.quantity() == quantity


def test_lookup_resolves_products_and_variations_100_skus_per_request_and_caches(env: Env) -> None:
    skus = [f"SKU-{n}" for n in range(1, 211)] + ["NOPE-1"]
    with env.client() as client:
        found = client.lookup(skus)
        assert len([r for r in env.requests() if r[0] == "GET"]) == 3  # 211 skus / 99
        assert set(found) == set(skus) - {"NOPE-1"}
        variation = found["SKU-151"]
        assert variation.ref.variation_id is not None and variation.ref.product_id != variation.ref.variation_id
        assert variation.label.startswith("variation ") and variation.managed and variation.quantity() == 151 % 50
        assert found["SKU-7"].ref.variation_id is None and found["SKU-7"].levels == {None: 7}
        again = client.lookup(["SKU-3", "NOPE-1"])
        assert set(again) == {"SKU-3"}
        assert client.requests == 3 and len(env.requests()) == 3  # cached, misses included


def test_lookup_reports_case_twins_ambiguity_and_handles_commas(env: Env) -> None:
    with env.client() as client:
        found = client.lookup(["case-sku", "TWIN", "A,B", "UNMANAGED-1", "BY-PARENT-1"])
        assert set(found) == {"A,B", "UNMANAGED-1", "BY-PARENT-1"}
        assert "'Case-Sku', which differs in case" in (client.problem("case-sku") or "")
        assert "ambiguous" in (client.problem("TWIN") or "")
        assert found["A,B"].ref.product_id == 90040
        assert not found["UNMANAGED-1"].managed
        assert found["UNMANAGED-1"].unmanaged_reason == "the store does not manage its stock"
        assert not found["BY-PARENT-1"].managed
        assert found["BY-PARENT-1"].unmanaged_reason == "its stock is managed on the parent product"
    assert sku_chunks(["a", "b,c", "d"], size=2) == [["b,c"], ["a", "d"]]
    assert sku_chunks(["x" * 10] * 5, max_chars=25) == [["x" * 10] * 2] * 2 + [["x" * 10]]


def test_set_stock_batches_by_endpoint_and_parent(env: Env) -> None:
    skus = [f"SKU-{n}" for n in range(1, 211)]
    seen: list[int] = []
    with env.client() as client:
        found = client.lookup(skus)
        results = client.set_stock([StockUpdate(found[s], 1000 + i) for i, s in enumerate(skus)],
                                   on_applied=lambda done: seen.append(len(done)))
    assert all(r.ok for r in results) and [r.stock_quantity for r in results] == [1000 + i for i in range(210)]
    posts = [r[1] for r in env.writes()]
    # 150 products in two batches, 30 variations of each parent in one batch per parent
    assert sorted(posts) == sorted(["/wp-json/wc/v3/products/batch"] * 2 + [
        f"/wp-json/wc/v3/products/{found[s].ref.product_id}/variations/batch" for s in ("SKU-151", "SKU-181")])
    assert sorted(seen) == [30, 30, 50, 100]
    assert env.stock("SKU-1") == 1000 and env.stock("SKU-210") == 1209


def test_sandbox_refuses_batches_over_100_and_variations_on_the_products_endpoint(env: Env) -> None:
    with env.client(batch_size=100) as client:
        found = client.lookup(["SKU-151", "SKU-1"])
        wrong = client.set_stock([StockUpdate(found["SKU-151"], 5)], manage_stock=True)
        assert wrong[0].ok  # the client routes variations to their parent's endpoint...
        body = client._request("POST", "wp-json/wc/v3/products/batch", what="test",
                               body={"update": [{"id": found["SKU-151"].ref.variation_id, "stock_quantity": 1}]})
        assert "variations/&lt;id&gt;" in body["update"][0]["error"]["message"]  # ...because WC refuses it
        with pytest.raises(StorefrontError, match="413"):
            client._request("POST", "wp-json/wc/v3/products/batch", what="test",
                            body={"update": [{"id": found["SKU-1"].ref.product_id, "stock_quantity": 1}] * 101})


# ------------------------------------------------------------------------------------------------
# the rules
# ------------------------------------------------------------------------------------------------


def test_levels_are_applied_recorded_and_archived(env: Env) -> None:
    result = env.sync("s1.csv", stock_csv(("SKU-1", 40, T1), ("SKU-151", 0, T1), ("SKU-2", 2, T1)))
    accounted(result)
    assert result.counts["applied"] == 2 and result.counts["unchanged"] == 1  # SKU-2 shows 2 already
    assert (env.stock("SKU-1"), env.stock("SKU-151")) == (40, 0)
    assert result.moved_to.endswith("archive/s1.csv") and result.errors_file is None
    assert env.files("archive") == ["s1.csv"] and not (env.stock_dir / "s1.csv").exists()
    levels = env.ledger.stock_levels.all_levels(STORE)
    assert {s: lv.quantity for (s, _), lv in levels.items()} == {"SKU-1": 40, "SKU-151": 0, "SKU-2": 2}
    assert {location for _, location in levels} == {None}  # WooCommerce: one level per SKU
    assert levels["SKU-1", None].source_file == "s1.csv" and levels["SKU-1", None].as_of.isoformat() == "2026-11-29T10:00:00+00:00"


def test_equal_quantities_are_not_written(env: Env) -> None:
    result = env.sync("same.csv", stock_csv(("SKU-3", 3, T1), ("SKU-152", 152 % 50, T1)))
    assert result.counts["unchanged"] == 2
    assert env.writes() == []


def test_the_same_file_twice_changes_nothing_and_asks_the_store_nothing(env: Env) -> None:
    data = stock_csv(("SKU-1", 41, T1), ("SKU-4", 9, T1), ("SKU-160", 1, T1))
    first = env.sync("a.csv", data)
    assert first.counts["applied"] == 3
    before = len(env.requests())
    env.shop.add_products([{"id": 10_000, "sku": "SKU-1", "manage_stock": True, "stock_quantity": 38}],
                          baseline=False)  # a sale on the storefront meanwhile
    again = env.sync("a-again.csv", data)
    assert again.counts == {**dict.fromkeys(OUTCOMES, 0), "unchanged": 3}
    assert len(env.requests()) == before  # settled by the ledger alone
    assert env.stock("SKU-1") == 38
    assert env.files("archive") == ["a-again.csv", "a.csv"]


def test_a_newer_snapshot_without_change_asks_nothing_and_keeps_the_stores_own_sales(env: Env) -> None:
    env.sync("l1.csv", stock_csv(("SKU-15", 30, T1), ("SKU-16", 31, T1)))
    env.shop.add_products([{"id": 10_014, "sku": "SKU-15", "manage_stock": True, "stock_quantity": 28}],
                          baseline=False)  # two sold on the storefront, not yet seen by the backend
    before = len(env.requests())
    result = env.sync("l2.csv", stock_csv(("SKU-15", 30, T2), ("SKU-16", 29, T2)))
    assert (result.counts["unchanged"], result.counts["applied"]) == (1, 1)
    assert env.stock("SKU-15") == 28 and env.stock("SKU-16") == 29
    assert [r[0] for r in env.requests()[before:]] == ["GET", "POST"]  # SKU-16 only
    level = env.ledger.stock_levels.levels(STORE, ["SKU-15"])["SKU-15", None]
    assert (level.quantity, level.source_file, level.as_of.hour) == (30, "l2.csv", 11)  # as_of moved on
    assert env.sync("l3.csv", stock_csv(("SKU-15", 30, T1))).counts["stale"] == 1


def test_newest_snapshot_wins_whatever_the_arrival_order(env: Env) -> None:
    newer = env.sync("b_new.csv", stock_csv(("SKU-5", 20, T2), ("SKU-6", 21, T2)))
    assert newer.counts["applied"] == 2
    older = env.sync("c_old.csv", stock_csv(("SKU-5", 99, T1), ("SKU-6", 21, T2), ("SKU-7", 30, T1)))
    accounted(older)
    assert (older.counts["stale"], older.counts["unchanged"], older.counts["applied"]) == (1, 1, 1)
    stale = next(o for o in older.outcomes if o.outcome == "stale")
    assert stale.sku == "SKU-5" and "older than the level 20" in stale.reason and "b_new.csv" in stale.reason
    assert (env.stock("SKU-5"), env.stock("SKU-7")) == (20, 30)
    assert env.ledger.stock_levels.levels(STORE, ["SKU-5"])["SKU-5", None].quantity == 20
    newest = env.sync("d.csv", stock_csv(("SKU-5", 25, T3)))
    assert newest.counts["applied"] == 1 and env.stock("SKU-5") == 25


def test_in_file_duplicates_and_a_contradiction_with_the_ledger(env: Env) -> None:
    env.sync("e.csv", stock_csv(("SKU-8", 11, T2)))
    result = env.sync("f.csv", stock_csv(("SKU-9", 1, T1), ("SKU-9", 2, T2), ("SKU-8", 12, T2),
                                         ("SKU-10", 5, T1), ("SKU-10", 5, T1)))
    accounted(result)
    by_line = {o.line_number: (o.outcome, o.reason) for o in result.outcomes}
    assert by_line[2][0] == "stale" and "superseded by line 3" in by_line[2][1]
    assert by_line[3][0] == "applied" and env.stock("SKU-9") == 2
    assert by_line[4][0] == "rejected" and "contradicts the level 11" in by_line[4][1]
    assert by_line[5][0] == "applied" and by_line[6] == ("unchanged", "repeats line 5")
    assert result.errors_file is not None and env.files("error") == ["f.csv", "f.csv.errors.json"]


def test_unknown_skus_and_bad_rows_go_to_error_after_the_good_rows(env: Env) -> None:
    data = stock_csv(("SKU-11", 33, T1), ("NO-SUCH", 1, T1), ("SKU-12", -1, T1), ("TWIN", 4, T1),
                     ("UNMANAGED-1", 6, T1), ("BY-PARENT-1", 2, T1))
    result = env.sync("g.csv", data)
    accounted(result)
    assert result.counts == {"applied": 1, "unchanged": 0, "stale": 0, "unknown_sku": 2, "unmanaged": 2,
                             "rejected": 1}
    assert env.stock("SKU-11") == 33
    assert env.shop.product_by_sku("UNMANAGED-1")["manage_stock"] is False  # not switched on
    assert env.files("error") == ["g.csv", "g.csv.errors.json"]
    report = json.loads((env.stock_dir / "error" / "g.csv.errors.json").read_text())
    assert [(e["line_number"], e["sku"], e["outcome"]) for e in report["errors"]] == [
        (3, "NO-SUCH", "unknown_sku"), (4, "SKU-12", "rejected"), (5, "TWIN", "unknown_sku")]
    assert [e["sku"] for e in report["unmanaged"]] == ["UNMANAGED-1", "BY-PARENT-1"]
    assert report["counts"] == result.counts and report["moved_to"].endswith("error/g.csv")
    # the same name again: nothing is overwritten
    env.sync("g.csv", data)
    assert env.files("error") == ["g-1.csv", "g-1.csv.errors.json", "g.csv", "g.csv.errors.json"]


def test_unmanaged_products_alone_are_reported_but_archived_and_the_flag_switches_them_on(env: Env) -> None:
    result = env.sync("h.csv", stock_csv(("UNMANAGED-1", 6, T1)))
    assert result.counts["unmanaged"] == 1 and result.errors_file is None and env.writes() == []
    flagged = StoreConfig(id=STORE, storefront_conn_id=SHOP_CONN, backend_conn_id=SFTP_CONN,
                          backend=env.store.backend, manage_stock_on_apply=True)
    result = env.sync("i.csv", stock_csv(("UNMANAGED-1", 6, T2), ("BY-PARENT-1", 2, T2)), store=flagged)
    assert result.counts["applied"] == 2
    assert env.shop.product_by_sku("UNMANAGED-1")["manage_stock"] is True and env.stock("UNMANAGED-1") == 6
    assert env.shop.product_by_sku("BY-PARENT-1")["manage_stock"] is True and env.stock("BY-PARENT-1") == 2
    assert env.stock("PARENT-STOCK") == 9  # the parent's own level is untouched


def test_a_storefront_failure_mid_file_keeps_the_file_and_what_was_applied(env: Env) -> None:
    rows = [(f"SKU-{n}", 45, T1) for n in range(1, 151)] + [("SKU-151", 44, T1)]
    env.drop("j.csv", stock_csv(*rows))
    env.shop.inject_faults([{"type": "500", "method": "POST", "path": "/variations/batch", "times": 2}])
    with pytest.raises(StorefrontError, match="giving up after 2 attempts"):
        env.sync("j.csv", client=env.client(max_attempts=2))
    assert (env.stock_dir / "j.csv").exists() and env.files("archive") == []
    recorded = env.ledger.stock_levels.all_levels(STORE)
    assert len(recorded) == 150 and ("SKU-151", None) not in recorded  # both product batches, not the variation
    writes_before = len(env.writes())
    retry = env.sync("j.csv")
    accounted(retry)
    assert retry.counts["applied"] == 1 and retry.counts["unchanged"] == 150
    assert env.writes()[writes_before:] == [
        ("POST", f"/wp-json/wc/v3/products/{env.shop.product_by_sku('SKU-151')['parent_id']}/variations/batch", 200)]
    assert env.stock("SKU-151") == 44 and env.files("archive") == ["j.csv"]


class LosingClient:
    """A stock client with a bug: ``set_stock`` answers one result fewer than it was given."""

    def __init__(self, inner: WooCommerceStock) -> None:
        self.inner = inner
        self.per_location = inner.per_location

    def location_for(self, name: str | None) -> str | None:
        return self.inner.location_for(name)

    def lookup(self, skus):  # type: ignore[no-untyped-def]
        return self.inner.lookup(skus)

    def problem(self, sku: str) -> str | None:
        return self.inner.problem(sku)

    def set_stock(self, updates, *, manage_stock=True, on_applied=None):  # type: ignore[no-untyped-def]
        return self.inner.set_stock(updates, manage_stock=manage_stock, on_applied=on_applied)[1:]


def test_a_row_left_without_an_outcome_stops_the_file_as_an_invariant_violation(env: Env) -> None:
    """A ``RuntimeError`` said this before (issue 13, defect 6): retried by Airflow, and not the
    ``InvariantViolation`` the status sync and the export raise for counts that do not add up."""
    parsed = parse_stock_file(stock_csv(("SKU-11", 1, T1), ("SKU-12", 2, T1)), "lost.csv")
    with env.client() as client, pytest.raises(InvariantViolation) as raised:
        apply_stock_rows(STORE, parsed, LosingClient(client), env.ledger.stock_levels, source_file="lost.csv")
    assert str(raised.value) == ("store inv: stock file lost.csv: 1 outcome(s) for 2 row(s); "
                                 "a row would be lost from the report")
    assert isinstance(raised.value, PermanentError)


def test_apply_rows_without_files_and_the_directory_loop(env: Env) -> None:
    parsed = parse_stock_file(stock_csv(("SKU-13", 1, T1)), "mem.csv")
    with env.client() as client:
        outcomes = apply_stock_rows(STORE, parsed, client, env.ledger.stock_levels, source_file="mem.csv")
    assert [(o.sku, o.outcome, o.reason) for o in outcomes] == [("SKU-13", "applied", "13 -> 1")]
    env.drop("k2.csv", stock_csv(("SKU-14", 3, T2)))
    env.drop("k1.csv", stock_csv(("SKU-14", 2, T1)))
    env.drop(".k0.csv.part", b"sku,quantity,as_of\nSKU-14,")
    with env.client() as client:
        result = sync_stock_dir(env.store, env.session, client, env.ledger.stock_levels)
    assert [f.name for f in result.files] == ["k1.csv", "k2.csv"]
    assert result.counts["applied"] == 2 and env.stock("SKU-14") == 3
    assert (env.stock_dir / ".k0.csv.part").exists()
