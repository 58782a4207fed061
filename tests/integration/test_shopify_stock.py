"""Shopify stock levels per location over real HTTP against the Shopify sandbox: the look-up,
inventorySetQuantities with the compare value, the stale retry, refusals, and the neutral stock
sync driving it (two locations of one SKU are two levels)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from order_integration.backend.stock_files import parse_stock_file
from order_integration.inventory import apply_stock_rows
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.storefronts import get_stock_client
from order_integration.storefronts.base import StockUpdate, UnknownLocation
from order_integration.storefronts.shopify_stock import ShopifyStock
from sandbox.shopify_admin import SandboxShopify

pytestmark = pytest.mark.integration

TOKEN, CONN_ID = "shpat_stock", "shopify_stock"
L1, L2 = "gid://shopify/Location/1", "gid://shopify/Location/2"
T1, T2 = "2026-12-04T10:00:00Z", "2026-12-04T11:00:00Z"
VARIANTS = [
    {"id": 900, "sku": "A", "levels": {1: 5, 2: 3}},
    {"id": 901, "sku": "B", "levels": {1: 0}},
    {"id": 902, "sku": "UNTRACKED", "levels": {1: 1}, "tracked": False},
    {"id": 903, "sku": "TWIN", "levels": {1: 1}},
    {"id": 904, "sku": "TWIN", "levels": {1: 1}},
    {"id": 905, "sku": "SKU 7:B", "levels": {1: 2}},  # quoted in the search
]


@pytest.fixture
def shop(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxShopify]:
    with SandboxShopify(token=TOKEN) as s:
        s.add_catalog([{"id": 1, "name": "Main"}, {"id": 2, "name": "North"}], VARIANTS)
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}",
                           json.dumps({"conn_type": "http", "host": s.base_url, "password": TOKEN}))
        yield s


def client() -> ShopifyStock:
    return ShopifyStock(CONN_ID, stock_locations={"WH-1": "1", "WH-2": L2}, default_stock_location="1",
                        sleep=lambda _s: None)


def writes(shop: SandboxShopify) -> int:
    return sum("SetStock" in json.dumps(r) for r in shop.request_log)


def test_the_registry_gives_shopifys_stock_client_with_the_store_config() -> None:
    stock = get_stock_client("shopify", CONN_ID, stock_locations={"WH-1": "7"}, default_stock_location=None)
    assert isinstance(stock, ShopifyStock) and stock.per_location
    assert stock.location_for("WH-1") == "gid://shopify/Location/7"
    with pytest.raises(UnknownLocation, match="no default_stock_location"):
        stock.location_for(None)
    with pytest.raises(UnknownLocation, match=r"location 'WH-9' is not in the store config's stock_locations"):
        stock.location_for("WH-9")


def test_lookup_reads_levels_per_location_and_reports_what_it_cannot_use(shop: SandboxShopify) -> None:
    with client() as stock:
        found = stock.lookup(["A", "B", "UNTRACKED", "TWIN", "NOPE", "SKU 7:B", "a"])
    assert set(found) == {"A", "B", "UNTRACKED", "SKU 7:B"}
    assert found["A"].levels == {L1: 5, L2: 3} and found["A"].ref == "gid://shopify/InventoryItem/1000900"
    assert not found["UNTRACKED"].managed and "does not track" in found["UNTRACKED"].unmanaged_reason
    assert "ambiguous" in (stock.problem("TWIN") or "") and stock.problem("NOPE") is None


def test_two_locations_of_one_sku_are_applied_as_two_levels(shop: SandboxShopify, tmp_path: Path) -> None:
    ledger = Ledger(sqlite_engine(tmp_path / "l.db"), create=True)
    data = ("sku,quantity,as_of,location\n"
            f"A,10,{T1},WH-1\nA,20,{T1},WH-2\nB,0,{T1},\nB,4,{T1},WH-9\nUNTRACKED,3,{T1},\n").encode()
    with client() as stock:
        parsed = parse_stock_file(data, "s.csv", per_location=stock.per_location)
        outcomes = apply_stock_rows("shop", parsed, stock, ledger.stock_levels, source_file="s.csv")
    got = {o.line_number: (o.outcome, o.reason) for o in outcomes}
    assert got[2] == ("applied", "5 -> 10 at WH-1") and got[3] == ("applied", "3 -> 20 at WH-2")
    assert got[4] == ("unchanged", "the store already shows 0 at the default location")
    assert got[5][0] == "rejected" and "'WH-9' is not in the store config's stock_locations" in got[5][1]
    assert got[6][0] == "unmanaged"
    assert shop.inventory()["A"] == {"Main": 10, "North": 20}
    assert set(ledger.stock_levels.levels("shop", ["A"])) == {("A", L1), ("A", L2)}
    assert writes(shop) == 1  # both levels in one inventorySetQuantities


def test_a_level_changed_in_shopify_meanwhile_is_reread_and_written_once_more(shop: SandboxShopify) -> None:
    with client() as stock:
        item = stock.lookup(["A"])["A"]
        shop.state.levels[(1_000_900, 1)] = 4  # a sale after the look-up
        [result] = stock.set_stock([StockUpdate(item, 12, location=L1)])
    assert result.ok and shop.inventory()["A"]["Main"] == 12
    assert writes(shop) == 2  # refused as stale, re-read, written


def test_refused_quantities_are_results_and_the_rest_is_written(shop: SandboxShopify) -> None:
    with client() as stock:
        found = stock.lookup(["A", "B"])
        results = stock.set_stock([
            StockUpdate(found["A"], 7, location=L1),
            StockUpdate(found["B"], 1, location=L2),  # B is not stocked at North
            StockUpdate(found["B"], 2, location=L1),
            StockUpdate(found["A"], 8, location="gid://shopify/Location/99"),
        ])
    assert [r.ok for r in results] == [True, False, True, False]
    assert "not stocked at location" in (results[1].error or "")
    assert shop.inventory()["A"]["Main"] == 7 and shop.inventory()["B"] == {"Main": 2}
