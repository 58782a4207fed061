"""Named fault-injection points, off unless a test or a benchmark switches them on.

The export and the status sync call :func:`failpoint` at their step boundaries (after the
extract is staged, after a batch is claimed, in the middle of an upload, after the rename
and before the ledger write, inside the ledger transaction, between storefront writes…).
With ``ORDER_INTEGRATION_FAILPOINTS`` unset — always, in production — a call is one
environment look-up and returns.

The fault-injection suite sets ``ORDER_INTEGRATION_FAILPOINTS`` to a directory holding
``plan.json``::

    {"load.after_upload": {"action": "kill", "times": 1, "store": "crash_a"}}

and the named point then acts in whichever process reaches it — an Airflow task process
started by a scheduler, a worker on another machine sharing the folder, a forked child of a
benchmark. ``action`` is ``kill`` (``SIGKILL`` of the process: no ``finally`` blocks, no
exception handlers, no flushing — a worker dying) or ``raise`` (:class:`InjectedFault`, an
ordinary error Airflow retries). ``times`` is how often the point fires in all (default 1),
counted across processes with one marker file per firing (``<name>@<store>.<n>.fired``,
created with ``O_EXCL``), so "fire once, then let the retry through" holds however many
processes race. ``store`` limits a point to one store. Each firing is logged first.

Why not monkeypatching: the process that must die is started by Airflow, not by the test.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "ORDER_INTEGRATION_FAILPOINTS"
PLAN_FILE = "plan.json"
ACTIONS = ("kill", "raise")

#: Every point the package has, in the order a run meets them (the plan is checked against it).
POINTS = (
    "extract.after_staging",            # raw orders staged, the task not finished
    "validate.after_quarantine",        # quarantine recorded, deliverables not staged
    "load.after_claim",                 # versions claimed for a batch, no file rendered
    "load.after_render",                # file rendered and named in the ledger, not uploaded
    "sftp.upload.partial",              # part of the bytes written to .<name>.part
    "load.after_upload",                # renamed onto its final name, ledger not written
    "ledger.complete_batch.mid",        # inside the delivery transaction, before commit
    "status_sync.after_notes",          # a wave's notes posted, its status changes not
    "status_sync.mid_writes",           # some status changes of a wave written, not all
    "status_sync.before_ledger",        # a wave written to the storefront, not recorded
    "status_sync.before_move",          # file recorded, not archived / moved to error/
)


class InjectedFault(RuntimeError):
    """Raised by a point whose action is ``raise``."""


def failpoint(name: str, *, store: str | None = None) -> None:
    """Act if the active plan says so (see the module docstring); else do nothing."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    _maybe_fire(Path(folder), name, store)


def _load_plan(folder: Path) -> dict[str, Any]:
    try:
        plan = json.loads((folder / PLAN_FILE).read_text())
    except FileNotFoundError:
        return {}
    unknown = sorted(set(plan) - set(POINTS))
    if unknown:
        raise ValueError(f"{folder / PLAN_FILE}: unknown failpoint(s) {unknown}; known: {', '.join(POINTS)}")
    return plan


def _maybe_fire(folder: Path, name: str, store: str | None) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}")
    spec = _load_plan(folder).get(name)
    if not spec or (spec.get("store") and spec["store"] != store):
        return
    action = spec.get("action", "kill")
    if action not in ACTIONS:
        raise ValueError(f"failpoint {name}: action must be one of {ACTIONS}, got {action!r}")
    tag = f"{name}@{store or '-'}"
    for n in range(int(spec.get("times", 1))):
        try:
            fd = os.open(folder / f"{tag}.{n}.fired", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.write(fd, f"pid={os.getpid()}\n".encode())
        os.close(fd)
        log.warning("failpoint %s: %s (firing %d of %s)", tag, action, n + 1, spec.get("times", 1))
        if action == "kill":
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"failpoint {tag} (firing {n + 1})")


def fired(folder: Path) -> dict[str, int]:
    """How often each ``name@store`` fired under the plan in ``folder`` (for reports)."""
    counts: dict[str, int] = {}
    for marker in folder.glob("*.fired"):
        tag = marker.name.rsplit(".", 2)[0]
        counts[tag] = counts.get(tag, 0) + 1
    return counts
