"""Seeded, realistic WooCommerce REST API v3 order dicts for the sandbox storefront and tests.

Every order is shaped like ``GET /wp-json/wc/v3/orders`` returns it (naive store-local
``date_*`` strings next to their ``*_gmt`` twins, money as strings with the currency's
decimals, ``price`` as a JSON number computed ``total / quantity`` like WooCommerce does).
The amounts add up exactly the way WooCommerce defines them::

    sum(line subtotal) - discount_total + shipping_total + sum(fee total) + total_tax == total
    total_tax == cart_tax + shipping_tax

Only the stdlib ``random.Random(seed)`` is used, so a seed always gives the same orders.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from random import Random
from typing import Any
from zoneinfo import ZoneInfo

import pendulum

from order_integration.currency import minor_units

WC_VERSION = "9.4.2"
SHOP_URL = "https://shop.example.com"
ZERO = Decimal(0)

#: How often each status occurs (weights, roughly the brief's mix).
STATUS_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("processing", 65), ("pending", 10), ("on-hold", 10), ("completed", 7),
    ("cancelled", 5), ("refunded", 2), ("failed", 1),
)
CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "SEK": "kr", "KWD": "د.ك"}
#: Price of one EUR of catalogue price in each currency (exact decimals, rounded per currency).
EXCHANGE = {
    "EUR": Decimal(1), "USD": Decimal("1.08"), "GBP": Decimal("0.85"), "JPY": Decimal(160),
    "SEK": Decimal("11.40"), "KWD": Decimal("0.332"),
}


@dataclass(frozen=True)
class _Country:
    code: str
    currency: str
    weight: int
    tax_rate: Decimal          # percent
    tax_label: str
    rate_id: int
    # (first, last, ascii first, ascii last): the ascii pair builds the e-mail address.
    names: tuple[tuple[str, str, str, str], ...]
    # (city, state, postcode template: # digit, @ upper-case letter)
    cities: tuple[tuple[str, str, str], ...]
    streets: tuple[str, ...]
    street_fmt: str            # "{street} {no}" or "{no} {street}"
    phone_fmt: str             # "#" replaced by digits
    companies: tuple[str, ...]


COUNTRIES: tuple[_Country, ...] = (
    _Country(
        "DE", "EUR", 24, Decimal(19), "MwSt.", 1,
        (("Jürgen", "Müller", "juergen", "mueller"), ("Zoë", "Schäfer", "zoe", "schaefer"),
         ("Anna", "Schmidt", "anna", "schmidt"), ("Maximilian", "Weiß", "maximilian", "weiss"),
         ("Sophie", "Groß", "sophie", "gross"), ("Lukas", "Becker", "lukas", "becker"),
         ("Mia", "Hoffmann", "mia", "hoffmann"), ("Jörg", "Köhler", "joerg", "koehler")),
        (("Berlin", "", "1####"), ("München", "", "8####"), ("Köln", "", "5####"),
         ("Hamburg", "", "2####"), ("Düsseldorf", "", "4####")),
        ("Hauptstraße", "Bahnhofstraße", "Schillerstraße", "Goethestraße", "Lindenallee"),
        "{street} {no}", "+49 30 #######", ("Müller & Söhne GmbH", "Brotzeit AG", "Nordlicht KG"),
    ),
    _Country(
        "FR", "EUR", 10, Decimal(20), "TVA", 2,
        (("Zoë", "Lefèvre", "zoe", "lefevre"), ("Chloé", "Dubois", "chloe", "dubois"),
         ("Hélène", "Moreau", "helene", "moreau"), ("François", "Girard", "francois", "girard"),
         ("Léa", "Rousseau", "lea", "rousseau")),
        (("Paris", "", "750##"), ("Lyon", "", "6900#"), ("Marseille", "", "130##"),
         ("Bordeaux", "", "330##")),
        ("rue de la Paix", "avenue des Champs-Élysées", "boulevard Saint-Michel", "rue Lafayette"),
        "{no} {street}", "+33 6 ## ## ## ##", ("Boulangerie Dupont SARL", "Éclat SAS"),
    ),
    _Country(
        "PL", "EUR", 4, Decimal(23), "VAT", 3,
        (("Łukasz", "Wójcik", "lukasz", "wojcik"), ("Agnieszka", "Kowalczyk", "agnieszka", "kowalczyk"),
         ("Paweł", "Zieliński", "pawel", "zielinski"),
         ("Małgorzata", "Wiśniewska", "malgorzata", "wisniewska")),
        (("Warszawa", "", "0#-###"), ("Kraków", "", "3#-###"), ("Gdańsk", "", "80-###")),
        ("ul. Marszałkowska", "ul. Długa", "ul. Piotrkowska"),
        "{street} {no}", "+48 ### ### ###", ("Żabka Sp. z o.o.",),
    ),
    _Country(
        "GB", "GBP", 18, Decimal(20), "VAT", 4,
        (("Siobhán", "O'Brien", "siobhan", "obrien"), ("Oliver", "Smith", "oliver", "smith"),
         ("Amelia", "Jones", "amelia", "jones"), ("Harry", "Taylor", "harry", "taylor"),
         ("Isla", "Brown", "isla", "brown"), ("Rhys", "Llewellyn-Jones", "rhys", "llewellynjones")),
        (("London", "", "SW1A #@@"), ("Manchester", "", "M# #@@"), ("Edinburgh", "", "EH# #@@"),
         ("Cardiff", "", "CF## #@@")),
        ("Baker Street", "High Street", "Station Road", "Church Lane"),
        "{no} {street}", "+44 7### ######", ("Tea & Biscuits Ltd", "Fog Analytics plc"),
    ),
    _Country(
        "US", "USD", 26, ZERO, "Sales Tax", 0,  # US tax depends on the state, see _US_STATE_TAX
        (("John", "Doe", "john", "doe"), ("Emily", "Johnson", "emily", "johnson"),
         ("Michael", "Williams", "michael", "williams"), ("Sofía", "García", "sofia", "garcia"),
         ("Chris", "O'Neil", "chris", "oneil"), ("Ashley", "Miller", "ashley", "miller")),
        (("New York", "NY", "100##"), ("San Francisco", "CA", "941##"), ("Austin", "TX", "787##"),
         ("Seattle", "WA", "981##"), ("Portland", "OR", "972##")),
        ("Market Street", "Main St", "Broadway", "Elm Avenue", "Pennsylvania Ave NW"),
        "{no} {street}", "+1 ###-###-####", ("Acme Corp", "Globex Inc.", "Initech LLC"),
    ),
    _Country(
        "JP", "JPY", 7, Decimal(10), "消費税", 5,
        (("太郎", "山田", "taro", "yamada"), ("花子", "佐藤", "hanako", "sato"),
         ("健", "鈴木", "ken", "suzuki"), ("さくら", "高橋", "sakura", "takahashi")),
        (("千代田区", "JP13", "100-####"), ("大阪市北区", "JP27", "530-####"),
         ("札幌市中央区", "JP01", "060-####")),
        ("丸の内", "梅田", "大通西"), "{street}{no}-#-#", "+81 90-####-####", ("株式会社サンプル",),
    ),
    _Country(
        "SE", "SEK", 6, Decimal(25), "Moms", 6,
        (("Åsa", "Lindström", "asa", "lindstrom"), ("Björn", "Ödegaard", "bjorn", "odegaard"),
         ("Linnéa", "Johansson", "linnea", "johansson"), ("Erik", "Åkesson", "erik", "akesson")),
        (("Stockholm", "", "11# ##"), ("Göteborg", "", "41# ##"), ("Malmö", "", "21# ##")),
        ("Drottninggatan", "Storgatan", "Kungsgatan"), "{street} {no}", "+46 70 ### ## ##",
        ("Fika AB",),
    ),
    _Country(
        "KW", "KWD", 5, ZERO, "VAT", 0,
        (("Fatima", "Al-Sabah", "fatima", "alsabah"), ("عبدالله", "الكندري", "abdullah", "alkandari"),
         ("Yousef", "Al-Mutairi", "yousef", "almutairi")),
        (("Kuwait City", "", "1####"), ("Hawalli", "", "3####"), ("Salmiya", "", "2####")),
        ("Street 12, Block 3", "Gulf Road", "Salem Al-Mubarak St"), "{street}, House {no}",
        "+965 ########", ("Al-Dar Trading Co.",),
    ),
)
_US_STATE_TAX = {"NY": (Decimal("8.875"), 11), "CA": (Decimal("7.25"), 12), "TX": (Decimal("6.25"), 13),
                 "WA": (Decimal("6.5"), 14), "OR": (ZERO, 0)}


@dataclass(frozen=True)
class _Product:
    product_id: int
    variation_id: int
    name: str
    parent_name: str | None
    sku: str
    price_eur: Decimal
    virtual: bool
    image_id: int


def _catalogue() -> tuple[_Product, ...]:
    simple = [
        (101, "Espresso Beans 1 kg", "COF-ESP-1KG", "18.90"),
        (102, "Ceramic Mug “Morning”", "MUG-MRN", "12.50"),
        (103, "French Press 1 l", "FP-1000", "34.99"), (104, "Pour-Over Kettle", "KTL-PO", "59.00"),
        (105, "Grinder Pro 2", "GRD-PRO2", "249.00"), (106, "Paper Filters (100)", "FLT-100", "4.99"),
        (107, "Café Crème Sampler", "SMP-CC", "24.00"), (108, "Matcha Whisk 茶筅", "MAT-WHK", "16.40"),
        (109, "Travel Tumbler 350 ml", "TMB-350", "22.95"), (110, "Cold Brew Bottle", "CB-BTL", "29.99"),
    ]
    products = [_Product(pid, 0, name, None, sku, Decimal(price), False, pid * 10)
                for pid, name, sku, price in simple]
    variations = [
        (201, 2011, "Hoodie", "Grey, M", "HD-GRY-M", "49.00"),
        (201, 2012, "Hoodie", "Grey, L", "HD-GRY-L", "49.00"),
        (201, 2013, "Hoodie", "Navy, XL", "HD-NVY-XL", "52.00"),
        (202, 2021, "Barista Apron", "Denim", "APR-DNM", "27.50"),
        (202, 2022, "Barista Apron", "Leather", "APR-LTH", "64.00"),
    ]
    products += [_Product(pid, vid, f"{parent} - {attrs}", parent, sku, Decimal(price), False, pid * 10)
                 for pid, vid, parent, attrs, sku, price in variations]
    virtual = [
        (301, "Gift Card 25", "GC-25", "25.00"), (302, "Online Brewing Course", "CRS-BREW", "79.00"),
        (303, "E-Book: The Perfect Cup", "EBK-CUP", "9.99"),
        (304, "Coffee Club Membership (1 month)", "SUB-1M", "14.90"),
    ]
    products += [_Product(pid, 0, name, None, sku, Decimal(price), True, 0)
                 for pid, name, sku, price in virtual]
    return tuple(products)


CATALOGUE = _catalogue()
_PHYSICAL = tuple(p for p in CATALOGUE if not p.virtual)
_VIRTUAL = tuple(p for p in CATALOGUE if p.virtual)
_COUPONS = (("spring10", "percent", Decimal(10)), ("vip15", "percent", Decimal(15)),
            ("welcome5", "fixed_cart", Decimal(5)), ("bulk20", "fixed_cart", Decimal(20)))
_PAYMENT = (("stripe", "Credit Card (Stripe)", 45), ("paypal", "PayPal", 30),
            ("bacs", "Direct bank transfer", 10), ("cod", "Cash on delivery", 8), ("klarna", "Klarna", 7))
_NOTES = ("", "", "", "", "", "", "Bitte beim Nachbarn abgeben.", "Please leave at the door; ring twice.",
          "Gift — no invoice in the parcel, please!", "置き配希望", "Livraison après 18h, merci.",
          'Call me at "work" first, then home', "Line one\nline two")


class _Seq:
    """Shared counter for order item ids (line, tax, shipping, fee and coupon items share it, like WC)."""

    def __init__(self, start: int) -> None:
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value


def _weighted(rng: Random, pairs: Any) -> Any:
    items = list(pairs)
    return rng.choices([p[0] for p in items], weights=[p[-1] for p in items], k=1)[0]


def _fill(rng: Random, template: str) -> str:
    out = []
    for ch in template:
        if ch == "#":
            out.append(str(rng.randrange(10)))
        elif ch == "@":
            out.append(rng.choice("ABDEFGHJLNPQRSTUWXYZ"))
        else:
            out.append(ch)
    return "".join(out)


def _fmt_time(epoch: int | None, tz: tzinfo = UTC) -> str | None:
    """Naive ``YYYY-MM-DDTHH:MM:SS`` wall time of ``epoch`` in ``tz``, as WooCommerce prints dates."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=tz).strftime("%Y-%m-%dT%H:%M:%S")


def _person(rng: Random, country: _Country) -> dict[str, str]:
    first, last, a_first, a_last = rng.choice(country.names)
    city, state, postcode = rng.choice(country.cities)
    street = country.street_fmt.format(street=rng.choice(country.streets), no=rng.randint(1, 240))
    domain = rng.choice(("example.com", "example.org", "mail.example.net"))
    return {
        "first_name": first, "last_name": last,
        "company": rng.choice(country.companies) if rng.random() < 0.12 else "",
        "address_1": _fill(rng, street),
        "address_2": rng.choice(("", "", "", "2. OG", "Apt 4B", "c/o Reception", "Flat 3")),
        "city": city, "state": state, "postcode": _fill(rng, postcode), "country": country.code,
        "email": f"{a_first}.{a_last}{rng.randint(1, 99)}@{domain}",
        "phone": _fill(rng, country.phone_fmt),
    }


def _tax_rate(country: _Country, state: str) -> tuple[Decimal, int, str, str]:
    """(percent, tax rate id, rate code, label) for a shipping destination."""
    if country.code == "US":
        rate, rate_id = _US_STATE_TAX.get(state, (ZERO, 0))
        return rate, rate_id, f"US-{state}-SALES TAX-1", "Sales Tax"
    code = f"{country.code}-{country.tax_label.upper().rstrip('.')}-1"
    return country.tax_rate, country.rate_id, code, country.tax_label


_EXPONENTS: dict[str, Decimal] = {}


def quantize(amount: Decimal, currency: str) -> Decimal:
    """``order_integration.currency.quantize`` with the exponent cached (100k orders call it ~4M times)."""
    exp = _EXPONENTS.get(currency)
    if exp is None:
        exp = _EXPONENTS[currency] = Decimal(1).scaleb(-minor_units(currency))
    return amount.quantize(exp, rounding=ROUND_HALF_UP)


def _money(amount: Decimal, currency: str) -> str:
    """Same text as ``order_integration.currency.format_money``."""
    return f"{quantize(amount, currency):f}"


def _php_price(total: str, quantity: int) -> float | int:
    """``$item->get_total() / $item->get_quantity()`` as PHP computes and ``json_encode`` prints it."""
    if quantity == 0:
        return 0
    if "." not in total and int(total) % quantity == 0:
        return int(total) // quantity  # PHP int / int stays int when exact
    return float(Decimal(total) / quantity)


@dataclass
class _Ctx:
    rng: Random
    seq: _Seq
    currency: str
    rate: Decimal       # percent, 0 = no tax
    rate_id: int


def _tax(amount: Decimal, ctx: _Ctx) -> Decimal:
    return quantize(amount * ctx.rate / 100, ctx.currency) if ctx.rate else ZERO


def _taxes_list(ctx: _Ctx, total: Decimal, subtotal: Decimal | None) -> list[dict[str, Any]]:
    if not ctx.rate:
        return []
    sub = "" if subtotal is None else _money(subtotal, ctx.currency)
    return [{"id": ctx.rate_id, "total": _money(total, ctx.currency), "subtotal": sub}]


def _unit_price(product: _Product, currency: str) -> Decimal:
    return quantize(product.price_eur * EXCHANGE[currency], currency)


def _line_items(ctx: _Ctx, virtual: bool) -> list[dict[str, Any]]:
    pool = _VIRTUAL if virtual else _PHYSICAL
    count = _weighted(ctx.rng, ((1, 40), (2, 25), (3, 15), (4, 10), (5, 6), (6, 4)))
    products = ctx.rng.sample(pool, k=min(count, len(pool)))
    lines = []
    for product in products:
        qty = _weighted(ctx.rng, ((1, 60), (2, 25), (3, 8), (4, 4), (5, 2), (10, 1)))
        subtotal = _unit_price(product, ctx.currency) * qty
        lines.append({
            "id": ctx.seq.next(), "name": product.name, "product_id": product.product_id,
            "variation_id": product.variation_id, "quantity": qty, "tax_class": "",
            "subtotal": subtotal, "total": subtotal,  # discounts are applied in _apply_coupon
            "meta_data": [], "sku": product.sku,
            "image": {"id": product.image_id,
                      "src": f"{SHOP_URL}/wp-content/uploads/2024/05/{product.sku.lower()}.jpg"
                      if product.image_id else ""},
            "parent_name": product.parent_name,
        })
    return lines


def _apply_coupon(ctx: _Ctx, lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Spread one coupon over the lines (WooCommerce stores the discount per line)."""
    code, kind, amount = ctx.rng.choice(_COUPONS)
    cart = sum((line["subtotal"] for line in lines), ZERO)
    if kind == "percent":
        shares = [quantize(line["subtotal"] * amount / 100, ctx.currency) for line in lines]
    else:
        wanted = min(quantize(amount * EXCHANGE[ctx.currency], ctx.currency), cart)
        shares = [quantize(wanted * line["subtotal"] / cart, ctx.currency) for line in lines]
        shares[-1] = max(ZERO, min(lines[-1]["subtotal"], wanted - sum(shares[:-1], ZERO)))
    discount = sum(shares, ZERO)
    if discount <= 0:
        return None
    for line, share in zip(lines, shares, strict=True):
        line["total"] = line["subtotal"] - share
    return {"code": code, "discount_type": kind, "nominal_amount": float(amount), "discount": discount}


def _finish_lines(ctx: _Ctx, lines: list[dict[str, Any]]) -> tuple[Decimal, Decimal, Decimal]:
    """Taxes and string formatting; returns (sum subtotal, sum total, discount tax)."""
    sub_sum = tot_sum = disc_tax = ZERO
    cur = ctx.currency
    for line in lines:
        sub, tot = line["subtotal"], line["total"]
        sub_tax, tot_tax = _tax(sub, ctx), _tax(tot, ctx)
        sub_sum, tot_sum, disc_tax = sub_sum + sub, tot_sum + tot, disc_tax + sub_tax - tot_tax
        line.update({
            "subtotal": _money(sub, cur), "subtotal_tax": _money(sub_tax, cur),
            "total": _money(tot, cur), "total_tax": _money(tot_tax, cur),
            "taxes": _taxes_list(ctx, tot_tax, sub_tax),
            "price": _php_price(_money(tot, cur), line["quantity"]),
        })
        line["_tax"] = tot_tax
    return sub_sum, tot_sum, disc_tax


_LINE_KEYS = ("id", "name", "product_id", "variation_id", "quantity", "tax_class", "subtotal", "subtotal_tax",
              "total", "total_tax", "taxes", "meta_data", "sku", "price", "image", "parent_name")


def _shipping_lines(ctx: _Ctx, goods: Decimal) -> list[dict[str, Any]]:
    free_from = quantize(Decimal(100) * EXCHANGE[ctx.currency], ctx.currency)
    if goods >= free_from and ctx.rng.random() < 0.7:
        method = ("free_shipping", "Free shipping", ZERO)
    else:
        method = ctx.rng.choice((("flat_rate", "Flat rate", Decimal("4.90")),
                                 ("flat_rate", "DHL Express", Decimal("12.50")),
                                 ("local_pickup", "Local pickup", ZERO)))
    method_id, title, eur = method
    total = quantize(eur * EXCHANGE[ctx.currency], ctx.currency)
    tax = _tax(total, ctx)
    return [{
        "id": ctx.seq.next(), "method_title": title, "method_id": method_id,
        "instance_id": str(ctx.rng.randint(1, 9)), "total": _money(total, ctx.currency),
        "total_tax": _money(tax, ctx.currency), "taxes": _taxes_list(ctx, tax, None) if tax else [],
        "meta_data": [], "_total": total, "_tax": tax,
    }]


def _fee_lines(ctx: _Ctx, payment_method: str) -> list[dict[str, Any]]:
    if payment_method == "cod":
        name, eur = "Cash on delivery fee", Decimal("2.00")
    elif ctx.rng.random() < 0.05:
        name, eur = "Gift wrapping", Decimal("3.50")
    else:
        return []
    total = quantize(eur * EXCHANGE[ctx.currency], ctx.currency)
    tax = _tax(total, ctx)
    return [{
        "id": ctx.seq.next(), "name": name, "tax_class": "", "tax_status": "taxable",
        "amount": _money(total, ctx.currency), "total": _money(total, ctx.currency),
        "total_tax": _money(tax, ctx.currency), "taxes": _taxes_list(ctx, tax, None) if tax else [],
        "meta_data": [], "_total": total, "_tax": tax,
    }]


def _dates(rng: Random, start: int, span: int, status: str) -> dict[str, int | None]:
    """Epoch seconds (UTC) of the order's life; ints keep 100k orders fast to generate."""
    modified = start + rng.randrange(span)
    roll = rng.random()
    if roll < 0.35:
        created = modified  # saved once and never touched again
    elif roll < 0.8:
        created = modified - rng.randint(1, 900)
    else:
        created = modified - rng.randint(900, 6 * 86400)
    paid = None
    if status in ("processing", "completed", "refunded"):
        paid = min(modified, created + rng.randint(2, 120))
    completed = modified if status in ("completed", "refunded") else None
    return {"created": created, "modified": modified, "paid": paid, "completed": completed}


def _addresses(rng: Random, country: _Country, virtual: bool
               ) -> tuple[dict[str, str], dict[str, str], _Country]:
    billing = _person(rng, country)
    if virtual:
        empty = dict.fromkeys(("first_name", "last_name", "company", "address_1", "address_2", "city",
                               "state", "postcode", "country", "phone"), "")
        return billing, empty, country
    ship_country = country
    if rng.random() < 0.85:
        shipping = {k: v for k, v in billing.items() if k != "email"}
    else:  # a gift: shipped to somebody else, sometimes abroad (tax follows the shipping address)
        if rng.random() < 0.4:
            ship_country = rng.choice([c for c in COUNTRIES if c.currency == country.currency])
        shipping = {k: v for k, v in _person(rng, ship_country).items() if k != "email"}
        if rng.random() < 0.5:
            shipping["phone"] = ""
    return billing, shipping, ship_country


def _tax_lines(ctx: _Ctx, rate_code: str, label: str, cart_tax: Decimal, ship_tax: Decimal
               ) -> list[dict[str, Any]]:
    if not ctx.rate:
        return []
    return [{
        "id": ctx.seq.next(), "rate_code": rate_code, "rate_id": ctx.rate_id, "label": label,
        "compound": False,
        "tax_total": _money(cart_tax, ctx.currency), "shipping_tax_total": _money(ship_tax, ctx.currency),
        "rate_percent": float(ctx.rate), "meta_data": [],
    }]


def _order(rng: Random, seq: _Seq, start: int, span: int, tz: tzinfo) -> dict[str, Any]:
    country = _weighted(rng, ((c, c.weight) for c in COUNTRIES))
    virtual = rng.random() < 0.08
    status = _weighted(rng, STATUS_WEIGHTS)
    billing, shipping, tax_country = _addresses(rng, country, virtual)
    destination = billing if virtual else shipping
    rate, rate_id, rate_code, tax_label = _tax_rate(tax_country, destination["state"])
    if billing["company"] and rng.random() < 0.6:
        rate = ZERO  # B2B reverse charge: no VAT on the invoice
    ctx = _Ctx(rng, seq, country.currency, rate, rate_id)
    payment = _weighted(rng, _PAYMENT)
    if payment == "cod" and virtual:
        payment = "stripe"

    lines = _line_items(ctx, virtual)
    coupon = _apply_coupon(ctx, lines) if rng.random() < 0.25 else None
    sub_sum, tot_sum, disc_tax = _finish_lines(ctx, lines)
    shipping_lines = [] if virtual else _shipping_lines(ctx, sub_sum)
    fee_lines = _fee_lines(ctx, payment)

    cur = ctx.currency
    ship_total = sum((s.pop("_total") for s in shipping_lines), ZERO)
    ship_tax = sum((s.pop("_tax") for s in shipping_lines), ZERO)
    fee_total = sum((f.pop("_total") for f in fee_lines), ZERO)
    cart_tax = sum((line.pop("_tax") for line in lines), ZERO) + sum((f.pop("_tax") for f in fee_lines), ZERO)
    total_tax = cart_tax + ship_tax
    total = tot_sum + ship_total + fee_total + total_tax
    coupon_lines = []
    if coupon:
        coupon_lines = [{"id": seq.next(), "code": coupon["code"],
                         "discount": _money(coupon["discount"], cur), "discount_tax": _money(disc_tax, cur),
                         "discount_type": coupon["discount_type"], "nominal_amount": coupon["nominal_amount"],
                         "free_shipping": False, "meta_data": []}]

    dates = _dates(rng, start, span, status)
    method, title = next((m, t) for m, t, _ in _PAYMENT if m == payment)
    paid = dates["paid"] is not None
    return {
        "status": status, "currency": cur,
        "discount_total": _money(sub_sum - tot_sum, cur), "discount_tax": _money(disc_tax, cur),
        "shipping_total": _money(ship_total, cur), "shipping_tax": _money(ship_tax, cur),
        "cart_tax": _money(cart_tax, cur), "total": _money(total, cur), "total_tax": _money(total_tax, cur),
        "customer_id": 0 if rng.random() < 0.3 else rng.randint(2, 5000),
        "billing": billing, "shipping": shipping,
        "payment_method": method, "payment_method_title": title,
        "transaction_id": (f"{method[:2]}_{rng.getrandbits(64):016x}"
                           if paid and method in ("stripe", "paypal") else ""),
        "customer_ip_address": f"203.0.113.{rng.randint(1, 254)}",
        "created_via": _weighted(rng, (("checkout", 90), ("admin", 6), ("rest-api", 4))),
        "customer_note": rng.choice(_NOTES),
        "line_items": [{k: line[k] for k in _LINE_KEYS} for line in lines],
        "tax_lines": _tax_lines(ctx, rate_code, tax_label, cart_tax, ship_tax),
        "shipping_lines": shipping_lines, "fee_lines": fee_lines, "coupon_lines": coupon_lines,
        "_dates": dates, "_tz": tz, "_refund": total if status == "refunded" else None,
    }


def _finalise(order: dict[str, Any], order_id: int, rng: Random, refund_id: int) -> dict[str, Any]:
    """Give the order its id and put the keys in the order WooCommerce answers with."""
    dates = order.pop("_dates")
    tz = order.pop("_tz")
    refund = order.pop("_refund")
    local = {k: _fmt_time(v, tz) for k, v in dates.items()}
    cur = order["currency"]
    status = order["status"]
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    bits = rng.getrandbits(78)
    key = "wc_order_" + "".join(alphabet[(bits >> (6 * i)) % 62] for i in range(13))
    base = f"{SHOP_URL}/wp-json/wc/v3"
    links: dict[str, Any] = {"self": [{"href": f"{base}/orders/{order_id}"}],
                             "collection": [{"href": f"{base}/orders"}]}
    if order["customer_id"]:
        links["customer"] = [{"href": f"{base}/customers/{order['customer_id']}"}]
    return {
        "id": order_id, "parent_id": 0, "status": status, "currency": cur, "version": WC_VERSION,
        "prices_include_tax": False,
        "date_created": local["created"], "date_modified": local["modified"],
        **{k: order[k] for k in ("discount_total", "discount_tax", "shipping_total", "shipping_tax",
                                 "cart_tax", "total", "total_tax", "customer_id")},
        "order_key": key,
        **{k: order[k] for k in ("billing", "shipping", "payment_method", "payment_method_title",
                                 "transaction_id", "customer_ip_address")},
        "customer_user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "created_via": order["created_via"], "customer_note": order["customer_note"],
        "date_completed": local["completed"], "date_paid": local["paid"],
        "cart_hash": hashlib.md5(key.encode(), usedforsecurity=False).hexdigest(),
        "number": str(order_id), "meta_data": [],
        **{k: order[k] for k in ("line_items", "tax_lines", "shipping_lines", "fee_lines", "coupon_lines")},
        "refunds": [] if refund is None else [{"id": refund_id, "reason": "Customer returned the goods",
                                               "total": "-" + _money(refund, cur)}],
        "payment_url": f"{SHOP_URL}/checkout/order-pay/{order_id}/?pay_for_order=true&key={key}",
        "is_editable": status in ("pending", "on-hold", "auto-draft"),
        "needs_payment": status in ("pending", "failed"),
        "needs_processing": status == "processing",
        "date_created_gmt": _fmt_time(dates["created"]), "date_modified_gmt": _fmt_time(dates["modified"]),
        "date_completed_gmt": _fmt_time(dates["completed"]), "date_paid_gmt": _fmt_time(dates["paid"]),
        "currency_symbol": CURRENCY_SYMBOLS.get(cur, cur),
        "_links": links,
    }


def generate_orders(n: int, *, start: pendulum.DateTime, end: pendulum.DateTime, seed: int,
                    first_id: int = 1001, store_timezone: str = "Europe/Berlin") -> list[dict[str, Any]]:
    """``n`` WooCommerce-shaped orders, ids ``first_id``.. in creation order, sorted by id.

    ``date_modified_gmt`` is spread over ``[start, end)`` at whole seconds (some share a second,
    as bulk edits do); ``date_created_gmt <= date_modified_gmt``. Local ``date_*`` fields are in
    ``store_timezone``. The same arguments always give the same orders.
    """
    first = int(start.timestamp())
    span = max(1, int(end.timestamp()) - first)
    rng = Random(seed)
    seq = _Seq(first_id * 10)
    tz = ZoneInfo(store_timezone)
    drafts = [_order(rng, seq, first, span, tz) for _ in range(n)]
    for i in range(1, n):
        if rng.random() < 0.04:  # a bulk action saved several orders within the same second
            prev = drafts[i - 1]["_dates"]
            cur = drafts[i]["_dates"]
            cur["modified"] = prev["modified"]
            cur["created"] = min(cur["created"], cur["modified"])
            cur["paid"] = None if cur["paid"] is None else min(cur["paid"], cur["modified"])
            cur["completed"] = None if cur["completed"] is None else cur["modified"]
    # WooCommerce hands out ids in creation order.
    drafts.sort(key=lambda d: d["_dates"]["created"])
    refund_ids = _Seq(first_id + n + 100)
    return [_finalise(d, first_id + i, rng, refund_ids.next()) for i, d in enumerate(drafts)]


# --- checks and broken copies for tests ------------------------------------------------------------


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def totals_add_up(order: dict[str, Any]) -> bool:
    """True when the order's amounts add up the way WooCommerce defines them (exact decimals)."""
    try:
        subtotal = sum((_dec(line["subtotal"]) for line in order["line_items"]), ZERO)
        fees = sum((_dec(fee["total"]) for fee in order["fee_lines"]), ZERO)
        expected = (subtotal - _dec(order["discount_total"]) + _dec(order["shipping_total"]) + fees
                    + _dec(order["total_tax"]))
        tax_ok = _dec(order["total_tax"]) == _dec(order["cart_tax"]) + _dec(order["shipping_tax"])
        return tax_ok and expected == _dec(order["total"])
    except (ArithmeticError, KeyError, TypeError, ValueError):
        return False


def recompute_totals(order: dict[str, Any]) -> dict[str, Any]:
    """Recompute the order-level amounts from its lines in place (keeps ``totals_add_up`` true)."""
    cur = order["currency"]
    lines = order["line_items"]
    sub = sum((_dec(line["subtotal"]) for line in lines), ZERO)
    tot = sum((_dec(line["total"]) for line in lines), ZERO)
    disc_tax = sum((_dec(line["subtotal_tax"]) - _dec(line["total_tax"]) for line in lines), ZERO)
    fees = sum((_dec(fee["total"]) for fee in order["fee_lines"]), ZERO)
    cart_tax = (sum((_dec(line["total_tax"]) for line in lines), ZERO)
                + sum((_dec(fee["total_tax"]) for fee in order["fee_lines"]), ZERO))
    total_tax = cart_tax + _dec(order["shipping_tax"])
    order.update({
        "discount_total": _money(sub - tot, cur), "discount_tax": _money(disc_tax, cur),
        "cart_tax": _money(cart_tax, cur), "total_tax": _money(total_tax, cur),
        "total": _money(tot + _dec(order["shipping_total"]) + fees + total_tax, cur),
    })
    return order


def _negate_first_line(order: dict[str, Any]) -> None:
    """Make the first line's price negative but keep its discount, so coupons still add up."""
    cur = order["currency"]
    line = order["line_items"][0]
    sub, tot = _dec(line["subtotal"]), _dec(line["total"])
    sub_tax, tot_tax = _dec(line["subtotal_tax"]), _dec(line["total_tax"])
    new_sub, new_sub_tax = -sub, -sub_tax
    new_tot, new_tot_tax = new_sub - (sub - tot), new_sub_tax - (sub_tax - tot_tax)
    line.update({"subtotal": _money(new_sub, cur), "total": _money(new_tot, cur),
                 "subtotal_tax": _money(new_sub_tax, cur), "total_tax": _money(new_tot_tax, cur)})
    line["taxes"] = [{**t, "total": _money(new_tot_tax, cur), "subtotal": _money(new_sub_tax, cur)}
                     for t in line["taxes"]]
    line["price"] = _php_price(line["total"], line["quantity"])
    recompute_totals(order)


def _negative_quantity(order: dict[str, Any]) -> None:
    line = order["line_items"][0]
    line["quantity"] = -abs(line["quantity"])
    line["price"] = _php_price(line["total"], line["quantity"])


def _no_lines(order: dict[str, Any]) -> None:
    order["line_items"] = []
    order["coupon_lines"] = []
    recompute_totals(order)


def _total_mismatch(order: dict[str, Any]) -> None:
    cur = order["currency"]
    one_unit = Decimal(1)
    order["total"] = _money(_dec(order["total"]) + one_unit, cur)


_BREAKERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "negative_quantity": _negative_quantity,
    "bad_currency": lambda o: o.update(currency="EURO"),
    "missing_currency": lambda o: o.update(currency=""),
    "total_mismatch": _total_mismatch,
    "bad_email": lambda o: o["billing"].update(email="maria.mueller(at)example"),
    "bad_country": lambda o: o["shipping"].update(country="Germany"),
    "no_lines": _no_lines,
    "negative_price": _negate_first_line,
    "missing_id": lambda o: o.update(id=None),
    "non_numeric_total": lambda o: o.update(total="12,50"),
}
INVALID_KINDS: tuple[str, ...] = tuple(_BREAKERS)


def make_invalid(order: dict[str, Any], kind: str) -> dict[str, Any]:
    """A deep copy of ``order`` broken in exactly one way (``kind`` from ``INVALID_KINDS``).

    Amounts are recomputed where the break changes lines, so only the named rule fails.
    ``missing_currency`` sends an empty string (WooCommerce always sends the key).
    """
    if kind not in _BREAKERS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(INVALID_KINDS)}")
    broken = copy.deepcopy(order)
    _BREAKERS[kind](broken)
    return broken
