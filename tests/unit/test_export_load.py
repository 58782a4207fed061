"""The export's load step: guards a real run does not reach without a broken ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from order_integration import export
from order_integration.config import StoreConfig
from order_integration.exceptions import InvariantViolation, PermanentError
from order_integration.ledger import Batch

pytestmark = pytest.mark.unit

STORE = StoreConfig(id="demo", storefront_conn_id="shop", backend_conn_id="backend")


class ForgetfulDeliveries:
    """A deliveries store whose batch row does not keep the rendered file it was just given."""

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self.completed: list[Batch] = []

    def batch_size(self, batch_id: str) -> int:
        return 1  # order 1001, version v1

    def in_batch(self, batch: Batch, versions: Any) -> set[tuple[str, str]]:
        return {("1001", "v1")} & set(versions)

    def set_batch_file(self, batch_id: str, staged_path: str, file_name: str, orders: int) -> None:
        pass  # lost: another process reset the row, or the write went nowhere

    def batch(self, batch_id: str) -> Batch:
        return self._batch

    def complete_batch(self, batch: Batch) -> int:
        self.completed.append(batch)
        return 1

    def drop_batch(self, batch_id: str) -> None:
        raise AssertionError("the batch claimed an order; it must not be dropped")


class RefusingSftp:
    def upload_atomic(self, *args: Any, **kwargs: Any) -> str:
        raise AssertionError("nothing may be uploaded for a batch without its file")


def test_a_batch_without_its_rendered_file_stops_the_load_with_a_sentence(tmp_path: Path) -> None:
    """An ``assert`` guarded this (issue 13, defect 6): gone under ``python -O`` (then a
    ``TypeError`` on ``None``), and an ``AssertionError`` Airflow retries to no end."""
    batch = Batch("b-1", "demo", "manual__1", "20261102T100000Z_20261102T110000Z",
                  str(tmp_path / "source.jsonl"), None, None, None)
    (tmp_path / "source.jsonl").write_text("")  # the batch's staged records (none here)
    deliveries = ForgetfulDeliveries(batch)
    with pytest.raises(InvariantViolation, match=r"store demo: batch b-1 .* has no rendered file") as raised:
        export._finish_batch(STORE, tmp_path, deliveries, RefusingSftp(), batch)  # type: ignore[arg-type]
    assert isinstance(raised.value, PermanentError)
    assert deliveries.completed == []
