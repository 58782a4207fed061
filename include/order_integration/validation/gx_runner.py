"""Validate a batch of orders with Great Expectations 1.x and split it into valid and invalid.

The expectation suite is data (``suite.yaml`` next to this module, editable by operators): each
entry names a rule id, a row-level GX expectation class, its kwargs and a detail template. The
orders are flattened into an order frame and a line frame (:mod:`.frames`), each frame is
validated by GX on an ephemeral context with ``COMPLETE`` results keyed by a positional column,
and every unexpected row is mapped back to its order. An invalid order gets EVERY failed rule
(its ``parse_problems`` first), each with a detail naming the value.

A run may come in chunks (:class:`SuiteRun`, so a large window is never held whole): rules
whose verdict on a row depends on that row alone (:data:`ROW_LOCAL_EXPECTATIONS`) run on the
frames of :data:`GX_ROWS` orders at a time (several chunks'); every other rule
(``order_id_unique``, anything with ``mostly``) runs once at the end on the run's whole
column(s) it needs. Row keys count across chunks, and the per-rule figures are summed, so the
result reads as one run over all orders.

GX and pandas are imported inside the functions: the library is imported at DAG parse time.
"""

from __future__ import annotations

import logging
import os
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from order_integration.currency import MINOR_UNITS
from order_integration.exceptions import ConfigError
from order_integration.model import Order, Problem
from order_integration.validation.frames import (
    LINE_FRAME_COLUMNS,
    ORDER_FRAME_COLUMNS,
    OrderFrames,
    build_frames,
    detail_context,
    template_fields,
)

#: The suite shipped with the package.
log = logging.getLogger(__name__)
DEFAULT_SUITE_PATH = Path(__file__).with_name("suite.yaml")

#: Frame name -> (its columns, the positional key column GX reports unexpected rows by).
FRAMES: dict[str, tuple[tuple[str, ...], str]] = {
    "orders": (ORDER_FRAME_COLUMNS, "row_key"),
    "lines": (LINE_FRAME_COLUMNS, "line_key"),
}

#: Row-level expectations whose verdict on a row depends on that row alone (no column
#: statistic, no other row): run per chunk. Any other expectation (uniqueness, monotony,
#: z-scores, type checks that pandas answers per column) runs once on the whole run's columns.
ROW_LOCAL_EXPECTATIONS: frozenset[str] = frozenset({
    "ExpectColumnPairValuesAToBeGreaterThanB", "ExpectColumnPairValuesToBeEqual",
    "ExpectColumnPairValuesToBeInSet", "ExpectColumnValueLengthsToBeBetween",
    "ExpectColumnValueLengthsToEqual", "ExpectColumnValuesToBeBetween",
    "ExpectColumnValuesToBeDateutilParseable", "ExpectColumnValuesToBeInSet",
    "ExpectColumnValuesToBeJsonParseable", "ExpectColumnValuesToBeNull",
    "ExpectColumnValuesToMatchJsonSchema", "ExpectColumnValuesToMatchRegex",
    "ExpectColumnValuesToMatchRegexList", "ExpectColumnValuesToMatchStrftimeFormat",
    "ExpectColumnValuesToNotBeInSet", "ExpectColumnValuesToNotBeNull",
    "ExpectColumnValuesToNotMatchRegex", "ExpectColumnValuesToNotMatchRegexList",
    "ExpectMulticolumnSumToEqual", "ExpectMulticolumnValuesToBeEqual",
    "ExpectSelectColumnValuesToBeUniqueWithinRecord",
})

#: Orders whose frames GX validates in one call: the frames of the chunks a run is fed in wait
#: until this many orders are in. GX costs about 0.16 s of CPU per call and frame whatever its
#: rows, then about 13 µs an order: in one process, 60k orders took 1.73 s in calls of 10,000
#: and 0.93 s in one call. A validate task of 100k orders (``bench/validate_bench.py --forked
#: --gx-rows``) holds 173 MB of its own at 10,000, 188 MB at 25,000, 205 MB at 50,000.
GX_ROWS = 25_000

#: Value sets every suite may reference by name without defining them.
BUILTIN_VALUE_SETS: dict[str, tuple[str, ...]] = {
    "iso4217": tuple(sorted(MINOR_UNITS)),
}

_ENTRY_KEYS = frozenset({"rule", "expectation", "kwargs", "detail", "value_set", "row_condition"})
_REQUIRED_KEYS = ("rule", "expectation", "kwargs", "detail")
# Set by the runner itself, or legacy spellings we refuse (string row conditions are deprecated
# in GX 1.9+: the entry's row_condition mapping is built into a Condition object instead).
_RESERVED_KWARGS = frozenset({"row_condition", "condition_parser", "meta", "result_format"})
_COLUMN_KWARGS = ("column", "column_A", "column_B")


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One expectation of the suite, checked and ready to build."""

    rule: str
    frame: str                     # "orders" or "lines"
    expectation: str               # GX class name, e.g. ExpectColumnValuesToBeBetween
    kwargs: Mapping[str, Any]      # value_set references resolved
    detail: str                    # str.format template over the failing row
    row_condition: Any = None      # a GX Condition object, or None
    fields: tuple[str, ...] = ()   # the template's field names

    def build(self, index: int) -> Any:
        """A fresh GX expectation; ``meta`` carries our index to map its result back."""
        import great_expectations.expectations as gxe

        cls = getattr(gxe, self.expectation)
        extra: dict[str, Any] = {"meta": {"rule": self.rule, "index": index}}
        if self.row_condition is not None:
            extra["row_condition"] = self.row_condition
        return cls(**self.kwargs, **extra)

    @property
    def row_local(self) -> bool:
        """Whether each row's verdict depends on that row alone (the rule may run per chunk).
        ``mostly`` makes the verdict a share of the whole run: not row-local."""
        return self.expectation in ROW_LOCAL_EXPECTATIONS and "mostly" not in self.kwargs

    def columns(self, all_columns: Sequence[str]) -> tuple[str, ...]:
        """The frame columns the rule reads (its kwargs, row condition and detail template);
        all of them when the row condition cannot be read."""
        named = [self.kwargs[k] for k in _COLUMN_KWARGS if k in self.kwargs]
        named += list(self.kwargs.get("column_list") or [])
        for name in self.fields:
            named.append(name if name in all_columns else f"{name}_minor")
        if self.row_condition is not None:
            found = _condition_columns(self.row_condition)
            if found is None:
                return tuple(all_columns)
            named += found
        return tuple(c for c in all_columns if c in set(named))


def _condition_columns(condition: Any) -> list[str] | None:
    """Columns a GX row condition reads, or ``None`` when its shape is not known here."""
    column = getattr(condition, "column", None)
    if column is not None and isinstance(getattr(column, "name", None), str):
        return [column.name]
    parts = getattr(condition, "conditions", None)
    if isinstance(parts, (list, tuple)) and parts:
        found: list[str] = []
        for part in parts:
            cols = _condition_columns(part)
            if cols is None:
                return None
            found += cols
        return found
    return None


@dataclass(frozen=True, slots=True)
class InvalidOrder:
    """An order that failed validation, with every reason."""

    order: Order
    problems: tuple[Problem, ...]


@dataclass(slots=True)
class ValidationOutcome:
    """Result of :func:`validate_orders`.

    ``invalid`` maps :func:`quarantine_key` (the order_id) to every failed rule; two orders
    sharing an order_id share one entry. ``invalid_orders`` keeps each invalid order with its own
    problems, in input order, for writers that need the order itself.
    """

    valid: list[Order]
    invalid: dict[str, list[Problem]]
    statistics: dict[str, Any]
    gx_result: dict[str, Any]
    invalid_orders: list[InvalidOrder] = field(default_factory=list)


def quarantine_key(order: Order, position: int) -> str:
    """The key of ``order`` in :attr:`ValidationOutcome.invalid`: its order_id, or a
    placeholder naming its position in the batch when the order_id is missing."""
    if order.order_id and str(order.order_id).strip():
        return order.order_id
    return f"<missing order_id #{position}>"


# --------------------------------------------------------------------------- suite loading


def quiet_gx() -> None:
    """Import GX with no telemetry and only its warnings in the task log. At INFO, GX
    logs about 200 lines of its own bookkeeping while importing ("Skipping registering
    function …", "Multiple declarations of metric …", its temporary docs folder), which buried
    the quarantine table an operator opens the log for."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations  # noqa: F401  (its modules set their loggers' levels at import)

    for name, logger in list(logging.root.manager.loggerDict.items()):
        # a few GX modules pin their own logger to INFO (e.g. the ephemeral docs folder's)
        if (name.startswith("great_expectations.") and isinstance(logger, logging.Logger)
                and logging.NOTSET < logger.level < logging.WARNING):
            logger.setLevel(logging.WARNING)


def load_suite(path: Path | None = None) -> tuple[RuleSpec, ...]:
    """Read and check the suite YAML; raises :class:`ConfigError` naming the rule at fault."""
    import yaml

    quiet_gx()  # checking the suite imports GX's expectation classes

    path = Path(path) if path is not None else DEFAULT_SUITE_PATH
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"validation suite {path}: cannot be read ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"validation suite {path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"validation suite {path}: must be a mapping with 'orders' and 'lines'")
    unknown = set(raw) - {"version", "value_sets", *FRAMES}
    if unknown:
        raise ConfigError(f"validation suite {path}: unknown top-level keys {sorted(unknown)}")
    value_sets = _value_sets(raw.get("value_sets") or {}, path)
    specs: list[RuleSpec] = []
    for frame in FRAMES:
        entries = raw.get(frame) or []
        if not isinstance(entries, list):
            raise ConfigError(f"validation suite {path}: '{frame}' must be a list of rules")
        for n, entry in enumerate(entries):
            specs.append(_rule_spec(entry, frame, f"validation suite {path}: {frame}[{n}]", value_sets))
    if not specs:
        raise ConfigError(f"validation suite {path}: has no rules")
    return tuple(specs)


def _value_sets(raw: Any, path: Path) -> dict[str, tuple[Any, ...]]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"validation suite {path}: 'value_sets' must be a mapping")
    sets: dict[str, tuple[Any, ...]] = dict(BUILTIN_VALUE_SETS)
    for name, values in raw.items():
        where = f"validation suite {path}: value_sets.{name}"
        if name in BUILTIN_VALUE_SETS:
            raise ConfigError(f"{where}: '{name}' is built in and cannot be redefined")
        if isinstance(values, str):
            values = values.split()
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: must be a non-empty list or a space-separated string")
        # A bare NO in a YAML list is the boolean false (Norway): refuse anything but text.
        bad = [v for v in values if not isinstance(v, str)]
        if bad:
            raise ConfigError(f"{where}: {bad!r} are not strings (quote them)")
        sets[str(name)] = tuple(values)
    return sets


def _rule_spec(entry: Any, frame: str, where: str, value_sets: Mapping[str, tuple[Any, ...]]) -> RuleSpec:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    rule = entry.get("rule")
    if not isinstance(rule, str) or not rule.isidentifier():
        raise ConfigError(f"{where}: 'rule' must be an identifier like order_adds_up, got {rule!r}")
    where = f"{where} (rule {rule})"
    missing = [k for k in _REQUIRED_KEYS if k not in entry]
    if missing:
        raise ConfigError(f"{where}: missing keys {missing}")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    columns, _key = FRAMES[frame]

    kwargs = _kwargs(entry, columns, frame, where, value_sets)

    detail = entry["detail"]
    if not isinstance(detail, str) or not detail.strip():
        raise ConfigError(f"{where}: 'detail' must be a non-empty text")
    fields = _template_fields(detail, template_fields(columns), frame, where)

    condition = None
    if entry.get("row_condition") is not None:
        condition = _row_condition(entry["row_condition"], columns, frame, where)

    spec = RuleSpec(
        rule=rule, frame=frame, expectation=_expectation_class(entry["expectation"], where),
        kwargs=kwargs, detail=detail, row_condition=condition, fields=fields,
    )
    try:  # building it once lets GX's own pydantic checks name bad kwargs now, not mid-run
        spec.build(0)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: invalid kwargs for {spec.expectation}: {exc}") from exc
    return spec


def _kwargs(
    entry: Mapping[str, Any], columns: Sequence[str], frame: str, where: str,
    value_sets: Mapping[str, tuple[Any, ...]],
) -> dict[str, Any]:
    """The expectation kwargs of ``entry``, columns checked and the value_set reference resolved."""
    kwargs = entry["kwargs"]
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}: 'kwargs' must be a mapping")
    kwargs = dict(kwargs)
    reserved = _RESERVED_KWARGS & set(kwargs)
    if reserved:
        raise ConfigError(f"{where}: kwargs {sorted(reserved)} are not allowed here")
    _check_columns(kwargs, columns, frame, where)
    if "value_set" in entry:
        name = entry["value_set"]
        if name not in value_sets:
            raise ConfigError(f"{where}: unknown value_set {name!r} (known: {sorted(value_sets)})")
        if "value_set" in kwargs:
            raise ConfigError(f"{where}: give value_set either by name or in kwargs, not both")
        kwargs["value_set"] = list(value_sets[name])
    return kwargs


def _expectation_class(name: Any, where: str) -> str:
    """The GX class name for ``name`` (class name or snake_case type), checked to be row-level."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: 'expectation' must be a GX expectation name, got {name!r}")
    class_name = "".join(p.capitalize() for p in name.split("_")) if "_" in name else name
    cls = getattr(gxe, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{where}: unknown expectation {name!r} (not a GX 1.x expectation class)")
    if not issubclass(cls, ColumnMapExpectation | ColumnPairMapExpectation | MulticolumnMapExpectation):
        raise ConfigError(
            f"{where}: expectation {class_name} is not row-level: its failures cannot be traced to orders"
        )
    return class_name


def _check_columns(kwargs: Mapping[str, Any], columns: Sequence[str], frame: str, where: str) -> None:
    named = [kwargs[k] for k in _COLUMN_KWARGS if k in kwargs]
    named += list(kwargs.get("column_list") or [])
    if not named:
        raise ConfigError(f"{where}: kwargs name no column")
    unknown = [c for c in named if c not in columns]
    if unknown:
        raise ConfigError(f"{where}: unknown {frame} column(s) {unknown}")


def _template_fields(detail: str, allowed: frozenset[str], frame: str, where: str) -> tuple[str, ...]:
    try:
        names = {f for _lit, f, _spec, _conv in string.Formatter().parse(detail) if f is not None}
    except ValueError as exc:
        raise ConfigError(f"{where}: 'detail' is not a valid template ({exc})") from exc
    bad = sorted(n for n in names if n not in allowed)
    if bad:
        raise ConfigError(f"{where}: 'detail' uses unknown {frame} field(s) {bad}")
    return tuple(sorted(names))


def _row_condition(raw: Any, columns: Sequence[str], frame: str, where: str) -> Any:
    """Build a GX Condition from ``{column: c, operator: "==", parameter: v}`` or ``{column: c,
    is_null: b}`` (GX's own serialised form, ``type`` and ``column: {name: c}``, works too)."""
    from great_expectations.expectations.row_conditions import deserialize_row_condition

    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: 'row_condition' must be a mapping")
    data = dict(raw)
    column = data.get("column")
    if isinstance(column, str):
        data["column"] = {"name": column}
        if column not in columns:
            raise ConfigError(f"{where}: row_condition uses unknown {frame} column {column!r}")
    data.setdefault("type", "nullity" if "is_null" in data else "comparison")
    try:
        return deserialize_row_condition(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: invalid row_condition {dict(raw)!r}: {exc}") from exc


# --------------------------------------------------------------------------- running


def validate_orders(orders: Sequence[Order], *, suite_path: Path | None = None) -> ValidationOutcome:
    """Split ``orders`` into valid ones and invalid ones with every failed rule (one chunk of a
    :class:`SuiteRun`).

    Raises :class:`ConfigError` when the suite is broken (bad YAML, unknown expectation, an
    expectation that errors while running): retrying cannot fix it.
    """
    run = SuiteRun(suite_path)
    found = run.validate_chunk(orders)
    rest, gx_result = run.finish()

    valid: list[Order] = []
    invalid: dict[str, list[Problem]] = {}
    invalid_orders: list[InvalidOrder] = []
    orders_by_rule: dict[str, int] = {}
    for position, order in enumerate(orders):
        problems = merge_problems(order.parse_problems, found.get(position, ()), rest.get(position, ()))
        if not problems:
            valid.append(order)
            continue
        invalid_orders.append(InvalidOrder(order, tuple(problems)))
        merged = invalid.setdefault(quarantine_key(order, position), [])
        merged[:] = _unique([*merged, *problems])
        for rule in dict.fromkeys(p.rule for p in problems):
            orders_by_rule[rule] = orders_by_rule.get(rule, 0) + 1

    statistics = {
        "orders": len(orders),
        "lines": run.rows["lines"],
        "valid": len(valid),
        "invalid": len(invalid_orders),
        "problems": sum(len(i.problems) for i in invalid_orders),
        "orders_by_rule": dict(sorted(orders_by_rule.items())),
        "expectations": len(run.specs),
        "build_frames_seconds": round(run.frames_seconds, 3),
        "gx_seconds": round(run.gx_seconds, 3),
    }
    return ValidationOutcome(valid, invalid, statistics, gx_result, invalid_orders)


#: One failed rule of an order: (the rule's index in the suite, the problem).
Found = tuple[int, Problem]


def merge_problems(
    parse_problems: Sequence[Problem], found: Sequence[Found], more: Sequence[Found] = ()
) -> list[Problem]:
    """An order's problems as one run reports them: parse problems first, then the failed
    rules in suite order (a line rule by line order: the sort is stable), each once."""
    ordered = sorted([*found, *more], key=lambda item: item[0])
    return _unique([*parse_problems, *(problem for _index, problem in ordered)])


class SuiteRun:
    """One validation run, fed in chunks; reads as one run over all the chunks' orders.

    :meth:`validate_chunk` adds a chunk's orders and returns the row-local rules failed by the
    orders validated so far (GX validates :data:`GX_ROWS` orders at a time, so a chunk's
    failures may come with a later call); :meth:`finish` validates what is left, runs the other
    rules on the whole run's columns they need, and returns those failures with the merged GX
    summary (per rule: element and unexpected counts summed, ``success`` the conjunction). The
    GX context, its pandas asset and the expectations are built once per run, not per chunk.
    """

    def __init__(self, suite_path: Path | None = None) -> None:
        self.specs = load_suite(suite_path)
        self.suite_path = suite_path
        self.rows = dict.fromkeys(FRAMES, 0)  # rows seen so far: the next chunk's first key
        self.frames_seconds = 0.0
        self.gx_seconds = 0.0
        self._local = {f: [(i, s) for i, s in enumerate(self.specs) if s.frame == f and s.row_local]
                       for f in FRAMES}
        self._late = {f: [(i, s) for i, s in enumerate(self.specs) if s.frame == f and not s.row_local]
                      for f in FRAMES}
        # Columns the late rules read, kept from each chunk (plus the keys and decimals).
        self._late_columns: dict[str, tuple[str, ...]] = {}
        for frame_name, indexed in self._late.items():
            if indexed:
                columns, key = FRAMES[frame_name]
                wanted = {key, "row_key", "decimals"}
                for _i, spec in indexed:
                    wanted.update(spec.columns(columns))
                self._late_columns[frame_name] = tuple(c for c in columns if c in wanted)
        self._late_parts: dict[str, list[Any]] = {f: [] for f in self._late_columns}
        # Frames not validated yet, and the first key of each frame among them.
        self._waiting: list[OrderFrames] = []
        self._waiting_from = dict(self.rows)
        # per rule index: [success, element_count, unexpected_count]
        self._totals = {i: [True, 0, 0] for i in range(len(self.specs))}
        self._gx: Any = None
        self._finished = False

    # -- GX, built once
    def _engine(self) -> Any:
        if self._gx is None:
            quiet_gx()
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            source = context.data_sources.add_pandas("order_validation")
            batches = {
                name: source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole_batch")
                for name in FRAMES
            }
            suites = {
                (name, part): gx.ExpectationSuite(name=f"order_validation_{name}_{part}",
                                                  expectations=[s.build(i) for i, s in indexed])
                for part, groups in (("chunk", self._local), ("run", self._late))
                for name, indexed in groups.items() if indexed
            }
            self._gx = (batches, suites)
        return self._gx

    def _validate(self, frame_name: str, part: str, frame: Any) -> list[tuple[int, list[int]]]:
        """Run one frame's rules of ``part`` on ``frame``; (rule index, failing keys) per rule,
        figures added to the run's totals."""
        batches, suites = self._engine()
        key = FRAMES[frame_name][1]
        started = time.perf_counter()
        batch = batches[frame_name].get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(
            suites[(frame_name, part)],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [key]},
        )
        self.gx_seconds += time.perf_counter() - started
        out: list[tuple[int, list[int]]] = []
        for res in result.results:
            index = int(res.expectation_config.meta["index"])
            spec = self.specs[index]
            _raise_on_exception(res, spec)
            keys = _positions(res.result, key, spec)
            totals = self._totals[index]
            totals[0] = totals[0] and bool(res.success)
            totals[1] += int(res.result.get("element_count") or 0)
            totals[2] += len(keys)
            if keys:
                out.append((index, keys))
        return out

    def validate_chunk(self, orders: Sequence[Order]) -> dict[int, list[Found]]:
        """Add ``orders`` (keyed after the previous chunks' rows); returns order position in the
        run -> the row-local rules it fails, for the orders validated by this call (parse
        problems not included): none until :data:`GX_ROWS` orders wait, then all of them."""
        if self._finished:
            raise RuntimeError("SuiteRun.validate_chunk after finish")
        started = time.perf_counter()
        frames = build_frames(orders, row_offset=self.rows["orders"], line_offset=self.rows["lines"])
        self.frames_seconds += time.perf_counter() - started
        if not self._waiting:
            self._waiting_from = dict(self.rows)
        self._waiting.append(frames)
        self.rows["orders"] += len(frames.orders)
        self.rows["lines"] += len(frames.lines)
        if self.rows["orders"] - self._waiting_from["orders"] < GX_ROWS:
            return {}
        return self._flush()

    def _flush(self) -> dict[int, list[Found]]:
        """Validate the waiting frames (as one frame each) with the row-local rules."""
        import pandas as pd

        waiting, self._waiting = self._waiting, []
        failures: dict[int, list[Found]] = {}
        for frame_name in FRAMES:
            parts = [f.orders if frame_name == "orders" else f.lines for f in waiting]
            frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
            del parts
            if self._local[frame_name] and not frame.empty:
                offset = self._waiting_from[frame_name]
                for index, keys in self._validate(frame_name, "chunk", frame):
                    for owner, problem in self._problems(index, frame, [k - offset for k in keys]):
                        failures.setdefault(owner, []).append((index, problem))
            if frame_name in self._late_parts:
                self._late_parts[frame_name].append(frame[list(self._late_columns[frame_name])])
        return failures

    def _problems(self, index: int, frame: Any, positions: list[int]) -> list[tuple[int, Problem]]:
        """(owning order's row key, problem) for the failing rows at ``positions`` of ``frame``."""
        spec = self.specs[index]
        contexts = detail_context(frame, positions, spec.fields)
        owners = frame["row_key"].to_numpy()[positions].tolist()  # lines point at their order
        return [(int(owner), Problem(spec.rule, spec.detail.format_map(ctx)))
                for owner, ctx in zip(owners, contexts, strict=True)]

    def finish(self) -> tuple[dict[int, list[Found]], dict[str, Any]]:
        """Validate the orders still waiting, run the rules that need the whole run; returns
        order position (in the run) -> the rules it fails that no :meth:`validate_chunk` call
        returned, and the run's GX summary."""
        import great_expectations as gx
        import pandas as pd

        if self._finished:
            raise RuntimeError("SuiteRun.finish twice")
        rest = self._flush() if self._waiting else {}
        self._finished = True
        for frame_name, parts in self._late_parts.items():
            if not parts or not self.rows[frame_name]:
                continue
            frame = pd.concat(parts, ignore_index=True)
            parts.clear()
            for index, keys in self._validate(frame_name, "run", frame):
                for owner, problem in self._problems(index, frame, keys):
                    rest.setdefault(owner, []).append((index, problem))
        summary: dict[str, Any] = {
            "success": True, "gx_version": gx.__version__, "frames": {}, "expectations": [],
        }
        for frame_name in FRAMES:
            indexed = [(i, s) for i, s in enumerate(self.specs) if s.frame == frame_name]
            rows = self.rows[frame_name]
            if not indexed or not rows:
                summary["frames"][frame_name] = {"rows": rows, "success": True, "skipped": True}
                for i, s in indexed:
                    summary["expectations"].append(_summary_row(i, s, success=True, elements=0, unexpected=0))
                continue
            success = all(self._totals[i][0] for i, _s in indexed)
            summary["frames"][frame_name] = {"rows": rows, "success": success}
            summary["success"] = summary["success"] and success
            for i, s in indexed:
                ok, elements, unexpected = self._totals[i]
                summary["expectations"].append(
                    _summary_row(i, s, success=ok, elements=elements, unexpected=unexpected))
        summary["expectations"].sort(key=lambda row: row["index"])
        summary["suite"] = str(self.suite_path or DEFAULT_SUITE_PATH)
        return rest, summary


def _unique(problems: Sequence[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _summary_row(
    index: int, spec: RuleSpec, *, success: bool, elements: int, unexpected: int
) -> dict[str, Any]:
    return {
        "index": index, "rule": spec.rule, "frame": spec.frame, "expectation": spec.expectation,
        "column": spec.kwargs.get("column"), "success": success,
        "element_count": elements, "unexpected_count": unexpected,
    }


def _raise_on_exception(res: Any, spec: RuleSpec) -> None:
    """An expectation that errored has no rows to blame: passing its orders would be silent
    data loss of the check, so the whole run stops (it is a suite problem, not an order one)."""
    info = res.exception_info or {}
    infos = [info] if "raised_exception" in info else list(info.values())
    for item in infos:
        if isinstance(item, Mapping) and item.get("raised_exception"):
            raise ConfigError(
                f"validation rule {spec.rule} ({spec.expectation} on {spec.frame}) failed to run: "
                f"{item.get('exception_message')}"
            )


def _positions(result: Mapping[str, Any], key: str, spec: RuleSpec) -> list[int]:
    """Failing row positions from a COMPLETE result, checked against the unexpected count."""
    rows = result.get("unexpected_index_list") or []
    positions = sorted({int(r[key]) if isinstance(r, Mapping) else int(r) for r in rows})
    expected = int(result.get("unexpected_count") or 0)
    if len(positions) != expected:
        raise ConfigError(
            f"validation rule {spec.rule}: GX reported {expected} unexpected rows but named "
            f"{len(positions)}; cannot tell which orders failed"
        )
    return positions
