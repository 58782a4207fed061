"""Stock levels per location: the neutral stock sync drives a platform that keeps a level per
SKU *and* location (a unit-test double of :class:`StockClient`), and the store config's
``stock_locations`` / ``default_stock_location``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from order_integration.backend.stock_files import parse_stock_file
from order_integration.config import parse_config
from order_integration.exceptions import ConfigError
from order_integration.inventory import apply_stock_rows
from order_integration.ledger import Ledger, sqlite_engine
from order_integration.storefronts.base import (
    CatalogItem,
    StockClient,
    StockUpdate,
    StockWriteResult,
    UnknownLocation,
)

pytestmark = pytest.mark.unit

T1, T2, T0 = "2026-12-04T10:00:00Z", "2026-12-04T11:00:00Z", "2026-12-04T09:00:00Z"
L1, L2 = "gid://shopify/Location/1", "gid://shopify/Location/2"


class PerLocationStock:
    """A storefront keeping one level per SKU and location (as Shopify does), in memory."""

    per_location = True

    def __init__(self, shown: dict[tuple[str, str], int], locations: dict[str, str], default: str | None) -> None:
        self.shown = dict(shown)  # (sku, location key) -> quantity
        self.locations, self.default = locations, default
        self.looked_up: list[list[str]] = []
        self.written: list[tuple[str, str | None, int]] = []

    def location_for(self, name: str | None) -> str | None:
        if name is None:
            if self.default is None:
                raise UnknownLocation("the row names no location and the store sets no default_stock_location")
            return self.default
        if name not in self.locations:
            raise UnknownLocation(f"location {name!r} is not in stock_locations (known: "
                                  f"{', '.join(sorted(self.locations))})")
        return self.locations[name]

    def lookup(self, skus: Iterable[str]) -> dict[str, CatalogItem]:
        wanted = list(skus)
        self.looked_up.append(wanted)
        out = {}
        for sku in wanted:
            levels = {loc: q for (s, loc), q in self.shown.items() if s == sku}
            if levels:
                out[sku] = CatalogItem(sku, f"gid://shopify/InventoryItem/{sku}", f"inventory item {sku}", True,
                                       levels)
        return out

    def problem(self, sku: str) -> str | None:
        return None

    def set_stock(self, updates: Sequence[StockUpdate], *, manage_stock: bool = True,
                  on_applied: Callable[[list[StockWriteResult]], None] | None = None) -> list[StockWriteResult]:
        results = []
        for u in updates:
            self.shown[(u.item.sku, u.location)] = u.quantity
            self.written.append((u.item.sku, u.location, u.quantity))
            results.append(StockWriteResult(u, stock_quantity=u.quantity))
        if on_applied is not None:
            on_applied(results)
        return results


def stock_csv(*rows: str) -> bytes:
    return ("sku,quantity,as_of,location\n" + "".join(r + "\n" for r in rows)).encode()


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(sqlite_engine(tmp_path / "l.db"), create=True)


def shop() -> PerLocationStock:
    return PerLocationStock({("A", L1): 1, ("A", L2): 2, ("B", L1): 5}, {"WH-1": L1, "WH-2": L2, "north": L1}, L1)


def run(client: StockClient, ledger: Ledger, name: str, data: bytes) -> dict[int, tuple[str, str]]:
    parsed = parse_stock_file(data, name, per_location=client.per_location)
    outcomes = apply_stock_rows("s", parsed, client, ledger.stock_levels, source_file=name)
    return {o.line_number: (o.outcome, o.reason) for o in outcomes}


def test_the_fake_is_a_stock_client() -> None:
    client: StockClient = shop()  # the protocol, as a type checker sees it
    assert client.per_location is True


def test_two_locations_of_one_sku_are_applied_as_two_levels(ledger: Ledger) -> None:
    client = shop()
    result = run(client, ledger, "a.csv", stock_csv(f"A,10,{T1},WH-1", f"A,20,{T1},WH-2", f"B,5,{T1},"))
    assert result == {2: ("applied", "1 -> 10 at WH-1"), 3: ("applied", "2 -> 20 at WH-2"),
                      4: ("unchanged", "the store already shows 5 at the default location")}
    assert client.written == [("A", L1, 10), ("A", L2, 20)]
    levels = ledger.stock_levels.all_levels("s")
    assert {k: (v.quantity, v.file_location) for k, v in levels.items()} == {
        ("A", L1): (10, "WH-1"), ("A", L2): (20, "WH-2"), ("B", L1): (5, None)}
    # the same file again: settled by the ledger, per location, without asking the store
    client.looked_up.clear()
    again = run(client, ledger, "a-again.csv", stock_csv(f"A,10,{T1},WH-1", f"A,20,{T1},WH-2"))
    assert [o for o, _ in again.values()] == ["unchanged", "unchanged"] and client.looked_up == []
    # newer for one location, older for the other: each level keeps its own as_of
    later = run(client, ledger, "b.csv", stock_csv(f"A,11,{T2},WH-1", f"A,99,{T0},WH-2"))
    assert later[2] == ("applied", "10 -> 11 at WH-1")
    assert later[3][0] == "stale" and "older than the level 20" in later[3][1]
    assert client.shown[("A", L2)] == 20


def test_an_unknown_location_refuses_its_row_with_the_reason_and_the_rest_applies(ledger: Ledger) -> None:
    client = shop()
    result = run(client, ledger, "c.csv", stock_csv(f"A,10,{T1},WH-9", f"A,3,{T1},WH-2"))
    assert result[2] == ("rejected", "location 'WH-9' is not in stock_locations (known: WH-1, WH-2, north)")
    assert result[3] == ("applied", "2 -> 3 at WH-2")
    nodefault = PerLocationStock({("A", L1): 1}, {"WH-1": L1}, None)
    assert run(nodefault, ledger, "d.csv", stock_csv(f"A,4,{T2},"))[2] == (
        "rejected", "the row names no location and the store sets no default_stock_location")


def test_two_names_of_one_location_are_one_level(ledger: Ledger) -> None:
    """``north`` and ``WH-1`` name the same location, and so does a row without location (the
    default): the duplicate rule applies to the level, not to the name."""
    client = shop()
    result = run(client, ledger, "e.csv", stock_csv(f"A,7,{T1},WH-1", f"A,7,{T1},north", f"A,8,{T2},",
                                                    f"B,1,{T1},WH-1", f"B,2,{T1},north"))
    assert result[2] == ("stale", "superseded by line 4 (newer as_of)")
    assert result[3] == ("stale", "superseded by line 4 (newer as_of)")
    assert result[4] == ("applied", "1 -> 8 at the default location")
    assert result[5][0] == result[6][0] == "rejected"
    assert "different quantities (1 at WH-1, 2 at north)" in result[5][1]
    assert "one level per SKU" not in result[5][1]
    assert client.written == [("A", L1, 8)]


def test_the_store_config_maps_location_names_to_location_ids() -> None:
    base = {"id": "s", "platform": "woocommerce", "storefront_conn_id": "a", "backend_conn_id": "b"}
    store = parse_config({"stores": [dict(base, stock_locations={"WH-1": L1, "WH 2": 2},
                                          default_stock_location=L1)]}).stores[0]
    assert store.stock_locations == {"WH-1": L1, "WH 2": "2"} and store.default_stock_location == L1
    plain = parse_config({"stores": [base]}).stores[0]
    assert plain.stock_locations == {} and plain.default_stock_location is None
    for bad, message in [({"stock_locations": ["WH-1"]}, r"stock_locations: must be a mapping"),
                         ({"stock_locations": {" WH": L1}}, r"' WH' is not a location name"),
                         ({"stock_locations": {"WH": None}}, r"stock_locations\.WH: a location id is required"),
                         ({"stock_locations": {"WH": "a b"}}, r"'a b' is not a location id"),
                         ({"default_stock_location": ""}, r"default_stock_location: '' is not a location id")]:
        with pytest.raises(ConfigError, match=message):
            parse_config({"stores": [dict(base, **bad)]})
