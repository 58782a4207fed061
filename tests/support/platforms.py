"""The storefront platforms, as integration tests meet them: one kit per platform that starts
its sandbox with the same generated orders, gives the Airflow connection for it, and says
which of those orders the platform's default ``export_statuses`` export.

Tests take a kit through the ``platform`` fixture (parametrised over :data:`PLATFORMS`), so
one test body runs for every platform: parametrised, not copied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pendulum

#: Sandbox credentials (WooCommerce consumer key/secret; Shopify Admin API token).
WOO_KEY, WOO_SECRET = "ck_integration_test", "cs_integration_test"
SHOPIFY_TOKEN = "shpat_integration_test"


@dataclass(frozen=True)
class PlatformKit:
    name: str
    #: the generator's (WooCommerce) statuses whose orders this platform's default
    #: ``export_statuses`` export, once the sandbox converted them
    exportable_statuses: frozenset[str]

    def start(self, orders: list[dict[str, Any]], clock: Callable[[], Any] | None = None) -> Any:
        """The platform's sandbox holding ``orders`` (``sandbox.generator`` orders), started."""
        if self.name == "woocommerce":
            from sandbox.storefront import SandboxStorefront

            return SandboxStorefront(orders, consumer_key=WOO_KEY, consumer_secret=WOO_SECRET,
                                     clock=clock).start()
        from sandbox.shopify_admin import SandboxShopify

        return SandboxShopify(orders, token=SHOPIFY_TOKEN, clock=clock).start()

    def connection(self, shop: Any) -> dict[str, Any]:
        """The storefront's Airflow connection (``AIRFLOW_CONN_…`` JSON) for a started sandbox."""
        if self.name == "woocommerce":
            return {"conn_type": "http", "host": shop.base_url, "login": WOO_KEY, "password": WOO_SECRET}
        return {"conn_type": "http", "host": shop.base_url, "password": SHOPIFY_TOKEN}

    def upsert(self, shop: Any, order: dict[str, Any]) -> None:
        """Put a generated order (new, or a new version of one) into the started sandbox."""
        if self.name == "woocommerce":
            shop.upsert_order(order)
        else:
            shop.add_orders([order])

    def add_catalogue(self, shop: Any) -> None:
        """Give the sandbox the generator's catalogue (every SKU stock-managed)."""
        if self.name == "woocommerce":
            from sandbox.storefront import default_products

            shop.add_products(default_products())
        else:
            shop.add_default_catalog()  # one location, "Warehouse" (id 1)

    def stock_config(self) -> dict[str, Any]:
        """The store config keys the platform's stock sync needs for :meth:`add_catalogue`'s
        catalogue (Shopify: the location a row without one goes to)."""
        return {} if self.name == "woocommerce" else {"default_stock_location": "1"}

    def stock_levels(self, shop: Any) -> dict[str, int]:
        """SKU -> the quantity the storefront shows (Shopify: at its one location)."""
        if self.name == "woocommerce":
            return shop.stock_levels()
        return {sku: sum(levels.values()) for sku, levels in shop.inventory().items()}

    def writes(self, shop: Any) -> list[Any]:
        """Every request that may have changed the store (WooCommerce: not a GET; Shopify: a
        GraphQL mutation), in order."""
        if self.name == "woocommerce":
            return [r for r in shop.request_log if r[0] != "GET"]
        return [r for r in shop.request_log if "mutation" in r["body"]]

    def answered(self, shop: Any, order_id: int) -> str | None:
        """Which backend answer the storefront order shows now: ``accepted``, ``shipped``,
        ``rejected``, ``cancelled`` or ``None`` (WooCommerce: its status; Shopify: cancelled,
        every unit of its products fulfilled, or the erp-* tag)."""
        if self.name == "woocommerce":
            return {"processing": "accepted", "completed": "shipped", "on-hold": "rejected",
                    "cancelled": "cancelled"}.get(shop.get_order(order_id)["status"])
        order = shop.order(order_id)
        from sandbox.shopify_admin.data import fulfillment_status

        if order.get("cancelledAt"):
            return "cancelled"
        if fulfillment_status(order) == "FULFILLED":
            return "shipped"
        tags = set(order["tags"])
        return "rejected" if "erp-rejected" in tags else "accepted" if "erp-accepted" in tags else None

    def shows_tracking(self, shop: Any, order_id: int, number: str) -> bool:
        """Whether the customer is shown this tracking number (WooCommerce: a customer note;
        Shopify: a fulfillment's tracking info)."""
        if self.name == "woocommerce":
            return any(n["customer_note"] and number in n["note"] for n in shop.notes(order_id))
        return any(t.get("number") == number for f in shop.order(order_id)["fulfillments"]
                   for t in f["tracking"] or [])

    def modified_at(self, shop: Any, order_id: int) -> pendulum.DateTime:
        """When the storefront order was last modified (``date_modified_gmt``/``updatedAt``)."""
        if self.name == "woocommerce":
            return pendulum.parse(shop.get_order(order_id)["date_modified_gmt"] + "Z")
        return pendulum.parse(str(shop.order(order_id)["updatedAt"]))

    # -- money (paid/refunded from the backend) -----------------------------------------------

    @property
    def paid_status(self) -> str:
        """The status word of an order the backend's ``paid`` marked paid."""
        return "processing" if self.name == "woocommerce" else "paid"

    @property
    def pays_awaiting_orders(self) -> bool:
        """Whether ``paid`` marks an order awaiting a confirmed payment paid (WooCommerce
        ``on-hold``: yes; Shopify ``authorized``: no, mark-as-paid would capture the
        authorization through the gateway, so the note only, refused)."""
        return self.name == "woocommerce"

    @property
    def full_refund_status(self) -> str:
        """The status word after the backend refunded a paid order in full (WooCommerce moves it
        to ``refunded``; Shopify's financial status stays: no money moved through Shopify)."""
        return "refunded" if self.name == "woocommerce" else "paid"

    def status_word(self, shop: Any, order_id: int) -> str:
        """The order's status as the orders file carries it."""
        if self.name == "woocommerce":
            return shop.get_order(order_id)["status"]
        order = shop.order(order_id)
        return "cancelled" if order.get("cancelledAt") else str(order["financial"]).lower()

    def payment_references(self, shop: Any, order_id: int) -> set[str]:
        """The references of payments the storefront marked (WooCommerce ``transaction_id``;
        Shopify, where ``orderMarkAsPaid`` recorded a payment: the references of the status
        sync's payment marker lines in the order note)."""
        if self.name == "woocommerce":
            return {shop.get_order(order_id)["transaction_id"]} - {""}
        import re

        order = shop.order(order_id)
        if not order.get("transactions"):
            return set()
        note = order["note"] or ""
        return set(re.findall(r"^\[order-integration\] Payment.*\(reference (.+?)\)\.", note, re.M))

    def backend_refunds(self, shop: Any, order_id: int) -> list[tuple[str, bool, list[tuple[str, int]]]]:
        """(backend reference, money moved through the storefront, [(sku, units)]) per refund."""
        if self.name == "woocommerce":
            return [(r["meta_data"][0]["value"] if r["meta_data"] else "", bool(r["refunded_payment"]),
                     [(li["sku"], -li["quantity"]) for li in r["line_items"]]) for r in shop.refunds(order_id)]
        from order_integration.storefronts.shopify_money import refund_mark

        order = shop.order(order_id)
        skus = {li["id"]: li["sku"] for li in order["lineItems"]}
        return [((refund_mark(r["note"]) or ("", "", ""))[2], Decimal(str(r["amount"])) > 0,
                 [(skus[line_id], q) for _id, line_id, q, _restock in r["lines"]]) for r in order["refunds"]]

    def backend_notes(self, shop: Any, order_id: int) -> list[str]:
        """The notes the status sync left on the order (WooCommerce order notes; Shopify the
        marker lines of the order note and the notes of refunds)."""
        if self.name == "woocommerce":
            return [n["note"] for n in shop.notes(order_id)]
        order = shop.order(order_id)
        lines = [line for line in (order["note"] or "").splitlines() if line.startswith("[order-integration] ")]
        return lines + [r["note"] or "" for r in order["refunds"]]

    def refund_as_person(self, shop: Any, order: dict[str, Any]) -> None:
        """A person refunds the whole order in the storefront, moving the money there."""
        import requests

        if self.name == "woocommerce":
            answer = requests.post(f"{shop.base_url}/wp-json/wc/v3/orders/{order['id']}/refunds",
                                   json={"amount": order["total"], "api_refund": False, "reason": "goodwill"},
                                   auth=(WOO_KEY, WOO_SECRET), timeout=10)
            assert answer.status_code == 201, answer.text
            return
        gid = f"gid://shopify/Order/{order['id']}"
        query = ("mutation($i: RefundInput!) { refundCreate(input: $i) @idempotent(key: \"person\") "
                 "{ refund { id } userErrors { message } } }")
        refund = {"orderId": gid, "note": "goodwill", "transactions": [
            {"orderId": gid, "gateway": "manual", "kind": "REFUND", "amount": order["total"]}]}
        answer = requests.post(shop.graphql_url(), json={"query": query, "variables": {"i": refund}},
                               headers={"X-Shopify-Access-Token": SHOPIFY_TOKEN}, timeout=10)
        assert answer.status_code == 200 and answer.json()["data"]["refundCreate"]["userErrors"] == [], answer.text

    def exportable(self, order: dict[str, Any]) -> bool:
        """Whether the platform's default ``export_statuses`` export this generated order."""
        return order["status"] in self.exportable_statuses

    @staticmethod
    def modified(order: dict[str, Any]) -> pendulum.DateTime:
        """The generated order's modification time (``updatedAt`` on Shopify: the same instant)."""
        return pendulum.parse(order["date_modified_gmt"] + "Z")


WOOCOMMERCE = PlatformKit("woocommerce", frozenset({"processing", "on-hold"}))
#: the sandbox makes processing and completed orders PAID, on-hold ones AUTHORIZED; the
#: default export_statuses for Shopify are paid, partially_paid and authorized
SHOPIFY = PlatformKit("shopify", frozenset({"processing", "on-hold", "completed"}))
PLATFORMS = {kit.name: kit for kit in (WOOCOMMERCE, SHOPIFY)}
