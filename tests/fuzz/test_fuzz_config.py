"""Property tests of the store config (outside data: an operator's YAML).

Properties: ``parse_config`` gives a ``Config`` or raises ``ConfigError`` — nothing else — for
any YAML document (a valid store with random keys set, deleted or added, or any YAML value);
a refusal names where (``stores``, a key); YAML dump -> load -> parse equals parse; an accepted
config written back as a document (its dataclasses as mappings) parses to the same config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml
from hypothesis import event, example, given
from hypothesis import strategies as st

from order_integration.config import Config, parse_config
from order_integration.exceptions import ConfigError
from tests.fuzz.strategies import hostile_text

pytestmark = pytest.mark.fuzz

VALID_STORE = {
    "id": "demo", "platform": "woocommerce", "storefront_conn_id": "storefront_demo",
    "backend_conn_id": "backend_sftp_demo", "schedule": "@hourly", "lookback_minutes": 10,
    "export_statuses": ["processing", "on-hold"],
    "backend": {"inbound_dir": "inbound", "outbound_dir": "outbound", "stock_dir": "stock", "format": "csv"},
    "validation": {"max_quarantine_ratio": 0.05},
}
KEYS = [*VALID_STORE, "status_sync_schedule", "inventory_sync_schedule", "manage_stock_on_apply", "alerts",
        "storefront_concurrency", "retries", "retry_delay_seconds", "unknown_key", "ID", "mode"]
NESTED = {"backend": ["inbound_dir", "outbound_dir", "stock_dir", "format", "remote_dir"],
          "validation": ["max_quarantine_ratio", "min_validated_for_ratio", "ratio"],
          "alerts": ["conn_id", "to", "export_late_after_minutes", "slack"]}

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    hostile_text(), st.sampled_from(["*/5 * * * *", "@daily", "0 0 31 2 *", "@every 5m", "* * * * * *", "csv", "jsonl",
                                     "xml", "a@b.c", "demo_2", "DEMO", "x" * 33, "inbound/../..", "\x00"]),
)
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(hostile_text(8), st.integers()), inner, max_size=3)),
    max_leaves=6)


@st.composite
def documents(draw) -> Any:
    stores = []
    for index in range(draw(st.integers(1, 3))):
        store = dict(VALID_STORE, id=f"s{index}" if draw(st.integers(0, 9)) else "s0")
        store = {k: (dict(v) if isinstance(v, dict) else v) for k, v in store.items()}
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
            section = draw(st.sampled_from([None, None, "backend", "validation", "alerts"]))
            target = store if section is None else store.setdefault(section, {})
            if not isinstance(target, dict):
                continue
            key = draw(st.sampled_from(KEYS if section is None else NESTED[section]))
            if key in target and draw(st.integers(0, 3)) == 0:
                del target[key]
            else:
                target[key] = draw(yaml_values)
        stores.append(store)
    return {"stores": stores}


def _document(config: Config) -> dict[str, Any]:
    """The config written back as a YAML document (tuples as lists)."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {"stores": [plain(dataclasses.asdict(store)) for store in config.stores]}


def _parse(document: Any) -> Config | ConfigError:
    try:
        return parse_config(document, source="fuzz.yaml")
    except ConfigError as refused:
        return refused


@given(st.one_of(documents(), documents(), yaml_values, st.builds(lambda v: {"stores": v}, yaml_values)))
@example({"stores": [dict(VALID_STORE, schedule="0 0 31 2 *")]})
@example({"stores": [dict(VALID_STORE, validation={"max_quarantine_ratio": float("nan")})]})
@example({"stores": [dict(VALID_STORE, backend={"inbound_dir": "\x00"})]})
@example({"stores": [{**VALID_STORE, 1: 2}]})
def test_config_is_parsed_or_refused_with_a_named_key(document: Any) -> None:
    result = _parse(document)
    if isinstance(result, ConfigError):
        assert str(result).startswith("fuzz.yaml") or str(result).startswith("stores["), str(result)
        event("refused")
        return
    event(f"accepted: {len(result.stores)} store(s)")
    assert isinstance(result, Config) and result.stores
    assert len({s.id for s in result.stores}) == len(result.stores)
    again = _parse(_document(result))
    assert again == result, again  # written back, it is the same config


@given(documents())
@example({"stores": [dict(VALID_STORE, validation={"min_validated_for_ratio": "\x85"})]})
def test_yaml_dump_then_load_parses_the_same(document: Any) -> None:
    try:
        text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        return
    reloaded = yaml.safe_load(text)
    if reloaded != document:  # PyYAML's own loss (U+0085 reloads as a space; NaN != NaN): not ours
        event("YAML itself changed the document")
        return
    first, second = _parse(document), _parse(reloaded)
    if isinstance(first, ConfigError):
        assert isinstance(second, ConfigError) and str(second) == str(first)
    else:
        assert second == first
