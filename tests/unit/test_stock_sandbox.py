"""The sandbox's stock side: the storefront's product endpoints behave like WooCommerce's, and
the ERP simulator's stock files keep the contract (parsed by our own parser)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest
import requests

from order_integration.backend.stock_files import parse_stock_file
from sandbox.erp_simulator import UNKNOWN_SKU, ErpSimulator
from sandbox.sftp_server import EmbeddedSftpServer
from sandbox.storefront import SandboxStorefront, default_products, generate_products

pytestmark = pytest.mark.unit

AUTH = ("ck_stock", "cs_stock")
API = "/wp-json/wc/v3"


@pytest.fixture
def shop() -> Iterator[SandboxStorefront]:
    with SandboxStorefront(products=default_products() + generate_products(120, 1, 3),
                           consumer_key=AUTH[0], consumer_secret=AUTH[1]) as running:
        yield running


def get(shop: SandboxStorefront, path: str, **params: str) -> requests.Response:
    return requests.get(shop.base_url + API + path, params=params, auth=AUTH, timeout=10)


def post(shop: SandboxStorefront, path: str, body: object) -> requests.Response:
    return requests.post(shop.base_url + API + path, json=body, auth=AUTH, timeout=10)


def test_product_list_pages_and_counts_without_variations(shop: SandboxStorefront) -> None:
    first = get(shop, "/products", per_page="100", orderby="id", order="asc")
    products = [p for p in shop.catalog.items.values() if p["type"] != "variation"]
    assert first.headers["X-WP-Total"] == str(len(products))
    assert first.headers["X-WP-TotalPages"] == str(-(-len(products) // 100))
    assert len(first.json()) == 100 and all(p["type"] != "variation" for p in first.json())
    assert get(shop, "/products", per_page="101").status_code == 400


def test_sku_filter_finds_products_and_variations_case_insensitively(shop: SandboxStorefront) -> None:
    found = get(shop, "/products", sku="COF-ESP-1KG,hd-gry-m,NOPE", _fields="id,sku,type,parent_id").json()
    assert sorted((p["sku"], p["type"], p["parent_id"]) for p in found) == [
        ("COF-ESP-1KG", "simple", 0), ("HD-GRY-M", "variation", 201)]
    assert set(found[0]) == {"id", "sku", "type", "parent_id"}


def test_variation_endpoints_and_parent_managed_stock(shop: SandboxStorefront) -> None:
    variations = get(shop, "/products/201/variations", per_page="100").json()
    assert sorted(v["sku"] for v in variations) == ["HD-GRY-L", "HD-GRY-M", "HD-NVY-XL"]
    assert get(shop, "/products/201/variations/2011").json()["sku"] == "HD-GRY-M"
    assert get(shop, "/products/999999/variations").status_code == 404
    shop.add_products([{"id": 500, "type": "variable", "sku": "P", "manage_stock": True, "stock_quantity": 4,
                        "variations": [{"id": 501, "sku": "P-1"}]}])
    child = get(shop, "/products/501").json()
    assert (child["manage_stock"], child["stock_quantity"]) == ("parent", 4)


def test_batches_set_stock_and_refuse_what_woocommerce_refuses(shop: SandboxStorefront) -> None:
    answer = post(shop, "/products/batch", {"update": [
        {"id": 101, "manage_stock": True, "stock_quantity": 3},
        {"id": 2011, "stock_quantity": 1},  # a variation on the products endpoint
        {"id": 424242, "stock_quantity": 1},
        {"id": 301, "stock_quantity": 9},  # unmanaged: the quantity is not kept
    ]}).json()["update"]
    assert answer[0]["stock_quantity"] == 3 and answer[0]["stock_status"] == "instock"
    assert answer[1]["error"]["code"] == "woocommerce_rest_invalid_product_id"
    assert answer[2]["error"]["code"] == "woocommerce_rest_product_invalid_id"
    assert answer[3]["manage_stock"] is False and answer[3]["stock_quantity"] is None
    wrong_parent = post(shop, "/products/202/variations/batch", {"update": [{"id": 2011, "stock_quantity": 1}]})
    assert wrong_parent.json()["update"][0]["error"]["code"] == "woocommerce_rest_product_variation_invalid_id"
    ok = post(shop, "/products/201/variations/batch", {"update": [{"id": 2011, "stock_quantity": 0}]})
    assert ok.json()["update"][0]["stock_status"] == "outofstock"
    too_many = post(shop, "/products/batch", {"update": [{"id": 101, "stock_quantity": 1}] * 101})
    assert too_many.status_code == 413
    assert shop.product_by_sku("HD-GRY-M")["stock_quantity"] == 0


def test_control_endpoints_seed_inspect_and_reset(shop: SandboxStorefront) -> None:
    seeded = requests.post(shop.base_url + "/__sandbox/products", json=[{"id": 7000, "sku": "NEW-1",
                                                                        "manage_stock": True, "stock_quantity": 2}],
                           timeout=10)
    assert seeded.json() == {"upserted": 1}
    levels = requests.get(shop.base_url + "/__sandbox/products", timeout=10).json()
    assert levels["NEW-1"] == 2 and levels["GC-25"] is None
    post(shop, "/products/batch", {"update": [{"id": 7000, "stock_quantity": 8}]})
    assert shop.stock_levels()["NEW-1"] == 8
    shop.reset()
    assert shop.stock_levels()["NEW-1"] == 2


def test_erp_stock_files_keep_the_contract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = [pendulum.datetime(2026, 11, 2, 10, tz="UTC")]
    with EmbeddedSftpServer(tmp_path / "root", tmp_path / "keys") as server:
        monkeypatch.setenv("AIRFLOW_CONN_ERP_STOCK", json.dumps(server.airflow_connection()))
        erp = ErpSimulator("erp_stock", stock_dir="stock", seed=5, clock=lambda: now[0],
                           faults={"unknown_sku", "stale_stock"})
        snapshot = erp.write_stock("snapshot")
        now[0] = now[0].add(minutes=1)
        update = erp.write_stock("update", changes=2)
        files = sorted(p.name for p in (tmp_path / "root" / "stock").iterdir())
        parsed = {name: parse_stock_file((tmp_path / "root" / "stock" / name).read_bytes(), name) for name in files}
    assert files == sorted(snapshot.files + snapshot.stale_files + update.files + update.stale_files)
    assert files.index(snapshot.stale_files[0]) > files.index(snapshot.files[0])  # the stale one arrives later
    assert all(p.errors == [] for p in parsed.values())
    snap = {r.sku: r for r in parsed[snapshot.files[0]].rows}
    skus = {p["sku"] for p in default_products() if p.get("manage_stock")} | {
        v["sku"] for p in default_products() for v in p.get("variations") or []}
    assert set(snap) == skus | {UNKNOWN_SKU}
    stale = parsed[snapshot.stale_files[0]].rows
    assert all(r.as_of < snap[r.sku].as_of and r.quantity != snap[r.sku].quantity for r in stale)
    changed = [r for r in parsed[update.files[0]].rows if r.sku != UNKNOWN_SKU]
    assert len(changed) == 2 and all(r.quantity != snap[r.sku].quantity for r in changed)
    assert {r.sku: r.quantity for r in changed} == {s: erp._state["stock"][s] for s in (r.sku for r in changed)}
