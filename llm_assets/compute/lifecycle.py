"""The life of a rented machine, shared by every remote backend: intent, launch, confirm; adopt; terminate.

Why it is its own module: a machine bills from the provider's create call until the provider confirms it is
gone, and every step between can fail (a lost create response, an S3 error, a cancellation, an orchestrator
killed outright). The rules, in order:

1. Intent first. A `JobRecord` in state `launching`, carrying the machine's deterministic name, is written
   before the provider is asked for anything. A crash after the create leaves a name to look for.
2. Launch, then confirm. The record becomes `running` with the provider's id. If the create call fails (a
   timeout after the provider made the machine looks exactly like that), the machine is looked up by name
   and adopted when it exists; if recording it fails, it is terminated before the error goes on.
3. Adopt before creating. A `launching`/`running` record for the same work is reclaimed: its machine (by id,
   else by name) is adopted if alive, terminated if ended. Another run's record is reclaimed only when that
   run is over or its orchestrator stopped refreshing the record (`stale_seconds`); otherwise the work is
   refused (DuplicateJobError), so cancelling one run can never terminate another run's machine.
4. Terminate until confirmed. Terminate is retried with backoff until the provider says the machine is gone
   (a "not found" answer counts only once a lookup agrees); one it never confirms raises
   TerminationUnconfirmedError naming the machine, and the record stays live for the orphan sweeper.

Free of dagster: the backend passes itself (`backend_name`, `launch`, `find`, `poll`, `terminate`, `is_gone`)
and plain callables for logging and for asking whether a run is still live.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from llm_assets.compute.launch import LIVE_STATES, JobRecord
from llm_assets.core.artifacts import ArtifactStore
from llm_assets.core.failures import DuplicateJobError, TerminationUnconfirmedError


@dataclass
class Lifecycle:
    """Acquire (adopt or launch) and release (terminate, confirmed) one machine for one piece of work."""

    machines: Any                               # the backend: backend_name, find, poll, terminate, is_gone
    store: ArtifactStore
    log: Callable[[str], None] = print
    warn: Callable[[str], None] = print
    run_is_live: Callable[[str], bool] = lambda run_id: True  # unknown: assume live, the safe side
    terminate_attempts: int = 5
    terminate_retry_seconds: float = 2.0        # first backoff; doubles per attempt
    terminate_confirm_seconds: float = 30.0     # how long one attempt waits for the provider to say "gone"
    stale_seconds: float = 120.0                # an owner's record unrefreshed this long: its orchestrator died
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    adopted: list = field(default_factory=list)  # (job_id, why), for the caller's log and tests
    # Fault injection (bench/remote_faults.py): called after "intent", "created" and "recorded", so a benchmark
    # can stop an orchestrator dead between any two steps. None in production.
    on_step: Optional[Callable[[str], None]] = None

    def _step(self, name: str) -> None:
        if self.on_step is not None:
            self.on_step(name)

    @property
    def backend(self) -> str:
        return self.machines.backend_name

    # -- acquire -------------------------------------------------------------------------------
    def acquire(self, *, key: str, name: str, run_id: str, stage: str, messages_prefix: str,
                launch: Callable[[], Any], default_price: float) -> tuple[JobRecord, bool]:
        """(record of a running machine for this work, whether it was adopted rather than launched)."""
        record = JobRecord.load(self.store, key)
        if record is not None and record.state in LIVE_STATES and record.backend == self.backend:
            reclaimed = self.reclaim(record, run_id)
            if reclaimed is not None:
                return reclaimed, True
        return self.launch(key=key, name=name, run_id=run_id, stage=stage, messages_prefix=messages_prefix,
                            launch=launch, default_price=default_price), False

    def reclaim(self, record: JobRecord, run_id: str) -> Optional[JobRecord]:
        """The live machine a previous attempt (or a crashed orchestrator) left for this work, adopted; None when
        there is none (its ended machines terminated, the record closed)."""
        record = self._wait_for_owner(record, run_id)
        if record is None:
            return None
        candidates = [record.job_id] if record.job_id else []
        if record.machine_name:
            candidates += [i for i in self._find(record.machine_name) if i not in candidates]
        live = []
        for job_id in candidates:
            if self.machines.poll(job_id).done:
                self.terminate_confirmed(job_id)  # ended, but billing (disk) until terminated
            else:
                live.append(job_id)
        if not live:
            record.finished(self.store, note="nothing left running to adopt")
            return None
        keep, duplicates = live[0], live[1:]
        for job_id in duplicates:
            self.warn(f"{self.backend}: machine {job_id} duplicates {keep} for the same work; terminating it")
            self.terminate_confirmed(job_id)
        previous_run, previous_state = record.run_id, record.state
        record.job_id, record.state, record.run_id, record.heartbeat_at = keep, "running", run_id, self.clock()
        record.save(self.store)
        why = ("its create response was lost" if previous_state == "launching" else f"started by run {previous_run}")
        self.adopted.append((keep, why))
        self.log(f"{self.backend}: re-attaching to job {keep} ({why}) instead of launching a second one")
        return record

    def _wait_for_owner(self, record: JobRecord, run_id: str) -> Optional[JobRecord]:
        """The record once this run may take it over: its own, its owner's run over, or its owner silent for
        `stale_seconds`. A live owner that keeps refreshing it past that wait: DuplicateJobError."""
        waited_from = self.clock()
        while record.run_id != run_id and self.run_is_live(record.run_id):
            if self.clock() - record.heartbeat_at > self.stale_seconds:
                self.warn(f"{self.backend}: run {record.run_id} stopped refreshing job {record.job_key} "
                          f"{self.clock() - record.heartbeat_at:.0f}s ago; taking its machine over")
                return record
            if self.clock() - waited_from > self.stale_seconds:
                raise DuplicateJobError(
                    f"{self.backend}: the same work (job {record.job_key}, machine {record.job_id or record.machine_name}) "
                    f"is running under live run {record.run_id}; not launching a second machine")
            self.sleep(min(2.0, self.stale_seconds / 4))
            record = JobRecord.load(self.store, record.job_key)
            if record is None or record.state not in LIVE_STATES:
                return None
        return record

    def launch(self, *, key, name, run_id, stage, messages_prefix, launch, default_price) -> JobRecord:
        now = self.clock()
        record = JobRecord(backend=self.backend, job_id="", job_key=key, stage=stage, run_id=run_id,
                           messages_key_prefix=messages_prefix, started_at=now, hourly_price_usd=default_price,
                           state="launching", machine_name=name, heartbeat_at=now)
        record.save(self.store)  # intent: written before any machine can exist
        self._step("intent")
        launched: Optional[str] = None
        recorded = False
        try:
            try:
                job = launch()
            except Exception as exc:
                launched = self._adopt_after_failed_create(record, exc)
                price, details = default_price, {"adopted_after": type(exc).__name__}
            else:
                launched = job.job_id
                self._step("created")
                price = default_price if job.hourly_price_usd is None else job.hourly_price_usd
                details = job.details
            record.job_id, record.state, record.hourly_price_usd, record.details = launched, "running", price, details
            record.heartbeat_at = self.clock()
            record.save(self.store)
            recorded = True
            self._step("recorded")
            return record
        finally:
            if launched and not recorded:  # made but not recorded (S3 error, cancellation): never leave it billing
                self.warn(f"{self.backend}: machine {launched} was created but could not be recorded; terminating it")
                self.terminate_confirmed(launched)
                record.finished(self.store, note="terminated: could not be recorded")

    def _adopt_after_failed_create(self, record: JobRecord, exc: Exception) -> str:
        """A failed create may have made the machine anyway: look it up by name before giving up."""
        try:
            found = [i for i in self._find(record.machine_name) if not self.machines.poll(i).done]
        except Exception as lookup:  # cannot tell: leave the intent for the next attempt or the sweeper
            self.warn(f"{self.backend}: create failed ({type(exc).__name__}) and looking {record.machine_name} up "
                      f"failed too ({type(lookup).__name__}); the intent record stays for the next attempt")
            raise exc
        if not found:
            record.finished(self.store, note=f"create failed: {type(exc).__name__}")
            raise exc
        for duplicate in found[1:]:
            self.terminate_confirmed(duplicate)
        self.adopted.append((found[0], "its create response was lost"))
        self.log(f"{self.backend}: the create call failed ({type(exc).__name__}) but machine {found[0]} named "
                 f"{record.machine_name} exists; adopting it instead of creating another")
        return found[0]

    def _find(self, name: str) -> list[str]:
        return list(self.machines.find(name)) if name else []

    # -- release -------------------------------------------------------------------------------
    def release(self, record: JobRecord, note: str = "") -> None:
        """Terminate the record's machine until the provider confirms it, then close the record."""
        if not record.job_id:
            record.finished(self.store, note=note or "no machine")
            return
        try:
            self.terminate_confirmed(record.job_id)
        except TerminationUnconfirmedError as exc:
            record.note = str(exc)
            try:
                record.save(self.store)  # stays live: the sweeper keeps trying
            except Exception:  # noqa: BLE001 - the unconfirmed machine is the error that must surface
                pass
            raise
        record.finished(self.store, note=note)

    def terminate_confirmed(self, job_id: str) -> None:
        """Terminate `job_id`, retried with backoff until the provider confirms it gone."""
        last: Optional[BaseException] = None
        for attempt in range(self.terminate_attempts):
            failed = False
            try:
                self.machines.terminate(job_id)
            except Exception as exc:  # noqa: BLE001 - "not found" is fine if the lookup below agrees
                last, failed = exc, True
            # A refused call changed nothing to wait for: one look, then the next attempt (it bills meanwhile).
            if self._confirmed_gone(job_id, wait=not failed):
                return
            if attempt + 1 < self.terminate_attempts:
                self.warn(f"{self.backend}: machine {job_id} is not confirmed terminated (attempt {attempt + 1}/"
                          f"{self.terminate_attempts}{': ' + type(last).__name__ if last else ''}); retrying")
                self.sleep(min(60.0, self.terminate_retry_seconds * 2 ** attempt))
        raise TerminationUnconfirmedError(
            f"{self.backend}: machine {job_id} could not be confirmed terminated after {self.terminate_attempts} "
            f"attempts{f' (last error: {last})' if last else ''}; it may still be billing: terminate it in the "
            f"provider's console")

    def _confirmed_gone(self, job_id: str, wait: bool = True) -> bool:
        deadline = self.clock() + (self.terminate_confirm_seconds if wait else 0.0)
        while True:
            try:
                if self.machines.is_gone(job_id):
                    return True
            except Exception:  # noqa: BLE001 - an unreadable state is not a confirmation
                pass
            if self.clock() >= deadline:
                return False
            self.sleep(min(1.0, max(0.05, self.terminate_confirm_seconds / 10)))
