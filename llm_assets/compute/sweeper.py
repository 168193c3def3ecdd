"""The orphan sweeper: machines still billing that no live run drives, terminated (llm_assets.compute.lifecycle).

Two sources, because each misses what the other sees:
- job records (`compute/jobs/*.json`) still `launching`/`running` whose run is over, or whose orchestrator
  stopped refreshing them (`stale_record_seconds`): their machine (by id, else by name) is terminated and the
  record closed. This catches a machine whose terminate was never confirmed.
- the provider's own list of machines named `llm-assets-*` (launch.machine_name): one with no record, or whose
  record is closed or belongs to no live run, is terminated. This catches a machine created after a lost
  response by an orchestrator that then died.

A machine whose record is live and fresh is left alone, so a run in progress never loses its machine. Every
termination is confirmed (retried until the provider says gone); one that cannot be confirmed is reported
and tried again at the next tick. Free of dagster: the sensor (sensors/orphan_sweeper.py) passes callables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from llm_assets.compute.launch import LIVE_STATES, MACHINE_NAME_PREFIX, JobRecord, read_json
from llm_assets.compute.lifecycle import Lifecycle
from llm_assets.compute.run_budget import RunBudget, list_keys
from llm_assets.core.artifacts import ArtifactStore
from llm_assets.core.failures import TerminationUnconfirmedError


@dataclass(frozen=True)
class Swept:
    """One machine the sweeper terminated (or failed to), and why."""

    backend: str
    machine: str
    name: str
    run_id: str
    why: str
    confirmed: bool = True

    @property
    def line(self) -> str:
        verdict = "terminated" if self.confirmed else "NOT confirmed terminated (still billing?)"
        owner = f" of run {self.run_id}" if self.run_id else ""
        return f"orphan sweeper: {self.backend} machine {self.machine} ({self.name or 'unnamed'}){owner} {verdict}: {self.why}"


def job_records(store: ArtifactStore) -> list[JobRecord]:
    records = []
    for key in list_keys(store, "compute/jobs"):
        if not key.endswith(".json"):
            continue
        try:
            data = read_json(store, key)
        except Exception:  # noqa: BLE001 - not a record; the sweep goes on with the others
            continue
        if not isinstance(data, dict):
            continue
        known = JobRecord.__dataclass_fields__
        records.append(JobRecord(**{k: v for k, v in data.items() if k in known}))
    return records


def sweep(backends: Iterable, store: ArtifactStore, run_is_live: Callable[[str], bool], *,
          log: Callable[[str], None] = print, clock: Callable[[], float] = time.time,
          sleep: Callable[[float], None] = time.sleep) -> list[Swept]:
    """Terminate every machine of `backends` that no live run drives; what was done, one entry per machine."""
    records = job_records(store)
    done: list[Swept] = []
    for backend in backends:
        lifecycle = Lifecycle(backend, store, log=log, warn=log, run_is_live=run_is_live,
                              terminate_attempts=backend.terminate_attempts,
                              terminate_retry_seconds=backend.terminate_retry_seconds,
                              terminate_confirm_seconds=backend.terminate_confirm_seconds,
                              stale_seconds=backend.stale_record_seconds, clock=clock, sleep=sleep)
        mine = [r for r in records if r.backend == backend.backend_name]

        def driven(record: Optional[JobRecord]) -> bool:
            return (record is not None and record.state in LIVE_STATES and run_is_live(record.run_id)
                    and clock() - record.heartbeat_at <= backend.stale_record_seconds)

        handled: set[str] = set()
        for record in mine:
            if record.state not in LIVE_STATES or driven(record):
                continue
            why = "its run has ended" if not run_is_live(record.run_id) else (
                f"its run stopped refreshing the job record {clock() - record.heartbeat_at:.0f}s ago")
            ids = [record.job_id] if record.job_id else []
            ids += [i for i in backend.find(record.machine_name) if i not in ids] if record.machine_name else []
            results = [_terminate(lifecycle, backend, i, record.machine_name, record.run_id, why) for i in ids]
            done += results
            handled.update(ids)
            if all(r.confirmed for r in results):
                record.finished(store, note=f"swept: {why}")
                _close_budget(store, record)
        by_name = {r.machine_name: r for r in mine if r.machine_name}
        for machine, name in backend.list_machines():
            if machine in handled or not name.startswith(MACHINE_NAME_PREFIX + "-"):
                continue
            record = by_name.get(name)
            if driven(record):
                continue
            why = ("no job record names it" if record is None else
                   f"its job record is {record.state}" if record.state not in LIVE_STATES else "its run has ended")
            done.append(_terminate(lifecycle, backend, machine, name, record.run_id if record else "", why))
    for entry in done:
        log(entry.line)
    return done


def _terminate(lifecycle: Lifecycle, backend, machine: str, name: str, run_id: str, why: str) -> Swept:
    try:
        lifecycle.terminate_confirmed(machine)
    except TerminationUnconfirmedError as exc:
        return Swept(backend.backend_name, machine, name, run_id, f"{why}; {exc}", confirmed=False)
    return Swept(backend.backend_name, machine, name, run_id, why)


def _close_budget(store: ArtifactStore, record: JobRecord) -> None:
    """The swept launch stops counting against its run's budget at the sweep."""
    try:
        RunBudget(store, record.run_id, None).close(record.job_id)
    except Exception:  # noqa: BLE001 - a figure; the machine is what mattered
        pass
