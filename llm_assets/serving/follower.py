"""RegistryFollower: keeps the served model equal to the registry's alias (production by default).

Each check reads the alias; when it names another version (a promotion, or a rollback: the same path), the
follower fetches the GGUF into the cache, verifies its sha256 against the registry record, loads it beside
the old model (or alone, in a paused swap, when both do not fit the memory limit), runs the smoke
evaluation, and only then installs it. A failure at any stage leaves the old model serving and is reported
three ways: /health, the log, and a note in the registry's history (once per version).
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import time
from pathlib import Path

from llm_assets.core.artifacts import ArtifactNotFoundError, LocalArtifactStore, sha256_file
from llm_assets.core.errors import ArtifactIntegrityError
from llm_assets.core.registry import ModelRegistry, RegistryError, RegistryNotFoundError, VersionRecord
from llm_assets.serving.config import ServeConfig
from llm_assets.serving.holder import ModelHolder
from llm_assets.serving.metrics import Metrics
from llm_assets.serving.slot import ModelInfo, ModelSlot, SlotError
from llm_assets.serving.smoke import SmokeResult, required_accuracy, smoke_rows

log = logging.getLogger("llm_assets.serving")
STAGES = ("fetch", "verify", "load", "smoke")


class SwapFailed(Exception):
    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(message)


class NoRoom(SwapFailed):
    """The byte budget has no room now (the other models are busy), or nobody waits for the load any more: not
    the version's fault, so it is neither remembered as failed nor noted in the registry."""

    def __init__(self, message: str):
        super().__init__("load", message)


class RegistryFollower:
    """Keeps one holder equal to `model@ref` in the registry (ref: an alias, or a version number for a pin)."""

    def __init__(self, config: ServeConfig, holder: ModelHolder, metrics: Metrics, *, model: str, ref: str,
                 budget, wanted: bool = True):
        self.config, self.holder, self.metrics = config, holder, metrics
        self.model, self.ref, self.budget = model, ref, budget
        # False: do not load until a request asks (load=first_use, or evicted to make room for another model).
        self.wanted = wanted
        self.record: VersionRecord | None = None
        self.owner = None  # the ServedModel this follows for, never evicted to make room for itself
        self.previous_sha: str | None = None
        self.on_demand = False  # loading because a request asked (not at start): give up when nobody waits
        self.no_room = False  # the last load found no room in the byte budget (the other models busy)
        # Every follower's files, when the cache is shared (set by the Fleet); alone, its own.
        self.cache_in_use = self.shas_in_use
        self.cache_dir = Path(config.cache_dir).expanduser()
        self._smoke_rows = smoke_rows(config.smoke_items)
        self._registry: ModelRegistry | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._check_lock = threading.Lock()
        self._waiters: list[concurrent.futures.Future] = []
        self._thread: threading.Thread | None = None
        self._failed: dict[tuple[int, str | None], float] = {}  # target -> when it failed
        self.alias_version: int | None = None
        self.checked_at: float | None = None
        self.registry_error: str | None = None
        self.swapping: int | None = None
        self.last_swap: dict | None = None
        self.last_failure: dict | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"follow-{self.model}@{self.ref}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._registry is not None:
            self._registry.close()

    def request_check(self) -> concurrent.futures.Future:
        """Check the registry now (a notification); the future completes when that check is done."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._check_lock:
            self._waiters.append(future)
        self._wake.set()
        return future

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._check_lock:
                waiters, self._waiters = self._waiters, []
            self._wake.clear()
            try:
                outcome = self.check_once()
            except Exception as exc:  # never let one bad check end the loop; the old model keeps serving
                log.exception("registry check failed")
                outcome = f"check failed: {type(exc).__name__}: {exc}"
            for w in waiters:
                w.set_result(outcome)
            self._wake.wait(self.config.poll_interval_s)

    # ---- one check ---------------------------------------------------------------------------------------

    def check_once(self) -> str:
        cfg = self.config
        try:
            if self._registry is None:
                self._registry = ModelRegistry(cfg.registry_url)
            record = self._registry.resolve(self.model, self.ref)
        except RegistryNotFoundError as exc:
            self.alias_version, self.checked_at, self.registry_error = None, time.time(), None
            return f"nothing to serve: {exc}"
        except RegistryError as exc:
            self.registry_error = str(exc)
            log.error("cannot read the registry (still serving what is loaded): %s", exc)
            return f"registry error: {exc}"
        self.alias_version, self.checked_at, self.registry_error = record.version, time.time(), None
        self.record, self.no_room = record, False
        current = self.holder.current
        if current is not None and not current.alive:  # its model process died: load the version again
            log.error("the model process of v%s is gone; loading v%s", current.info.version, record.version)
            self.holder.discard(current)
            current = None
        target = (record.version, record.gguf_sha256)
        if current is not None and (current.info.version, current.info.sha256) == target:
            return f"serving v{record.version}"
        if current is None and not self.wanted:
            return f"v{record.version} not loaded (it loads on the first request for it)"
        failed_at = self._failed.get(target)
        if failed_at is not None and time.time() - failed_at < cfg.retry_failed_after_s:
            return f"v{record.version} failed recently; still serving " + (
                f"v{current.info.version}" if current else "nothing")
        return self._swap_to(record)

    def _swap_to(self, record: VersionRecord) -> str:
        current = self.holder.current
        before, before_sha = (current.info.version, current.info.sha256) if current else (None, None)
        started = time.perf_counter()
        self.swapping = record.version
        log.info("following %s@%s: v%s -> v%s", record.model, self.ref, before, record.version)
        try:
            path = self._fetch(record)
            metrics = record.metrics or {}
            scorer = metrics.get("scorer") or "pet"
            info = ModelInfo(record.model, record.version, record.gguf_sha256, str(path), path.stat().st_size,
                             record.gguf_uri, metrics.get("strict_accuracy") if scorer == "pet" else None, scorer,
                             record.serving)
            smoke = self._install(info)
        except NoRoom as exc:
            self.no_room = True
            if self.on_demand and self.holder.current is None:
                self.wanted = False  # loaded again when a request asks, not by the poll
            log.info("%s@%s v%s not loaded: %s", record.model, self.ref, record.version, exc)
            return f"not loaded: {exc}"
        except SwapFailed as exc:
            return self._failed_swap(record, before, exc)
        finally:
            self.swapping = None
        seconds = time.perf_counter() - started
        self._failed.pop((record.version, record.gguf_sha256), None)
        self.last_swap = {"from_version": before, "to_version": record.version, "at": time.time(),
                          "seconds": round(seconds, 3), "smoke": smoke.to_dict()}
        self.metrics.swap("success", seconds)
        log.info("now serving %s v%s (%d bytes, swap %.2fs; smoke: %s)", record.model, record.version,
                 info.bytes, seconds, smoke.reason)
        self.previous_sha = before_sha
        self._evict_cache(keep=self.cache_in_use())
        return f"swapped v{before} -> v{record.version}"

    def _failed_swap(self, record: VersionRecord, before: int | None, exc: SwapFailed) -> str:
        target = (record.version, record.gguf_sha256)
        first_time = target not in self._failed
        self._failed[target] = time.time()
        serving = f"v{before}" if before is not None else "nothing"
        message = (f"could not swap {record.model} to v{record.version}: {exc.stage} failed: {exc}; "
                   f"still serving {serving}")
        self.last_failure = {"version": record.version, "stage": exc.stage, "error": str(exc), "at": time.time(),
                             "serving": before}
        self.metrics.swap("failed", None, exc.stage)
        log.error(message)
        if first_time:
            try:
                self._registry.note(record.model, record.version, message, actor=_actor(self.config.actor))
            except RegistryError as note_exc:
                log.error("could not add the failure note to the registry: %s", note_exc)
        return message

    # ---- stages ------------------------------------------------------------------------------------------

    def _fetch(self, record: VersionRecord) -> Path:
        if not record.gguf_uri or not record.gguf_sha256:
            raise SwapFailed("fetch", f"v{record.version} records no GGUF uri and sha256")
        dest = self.cache_dir / f"{record.gguf_sha256}.gguf"
        if dest.is_file():
            actual = sha256_file(dest)
            if actual == record.gguf_sha256:
                return dest
            log.warning("cached %s hashes to %s; fetching it again", dest, actual)
            dest.unlink()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._store_for(record.gguf_uri).get_file(record.gguf_uri, dest, expected_sha256=record.gguf_sha256)
        except ArtifactIntegrityError as exc:  # get_file leaves nothing behind when the bytes do not match
            raise SwapFailed("verify", str(exc)) from exc
        except (ArtifactNotFoundError, OSError) as exc:
            raise SwapFailed("fetch", f"{record.gguf_uri}: {exc}") from exc
        except Exception as exc:  # S3 client errors and the like: the message names the object, never a secret
            raise SwapFailed("fetch", f"{record.gguf_uri}: {type(exc).__name__}: {exc}") from exc
        return dest

    def _store_for(self, uri: str):
        if uri.startswith("s3://"):
            from llm_assets.core.artifacts_s3 import S3ArtifactStore

            return S3ArtifactStore(uri[5:].split("/", 1)[0], s3=self.config.s3_settings())
        if uri.startswith("file:"):
            return LocalArtifactStore(self.cache_dir)
        raise SwapFailed("fetch", f"{uri}: unsupported URI scheme (want file:// or s3://)")

    def _install(self, info: ModelInfo) -> SmokeResult:
        budget = self.budget
        if not budget.fits_alone(info.bytes):
            raise SwapFailed("load", f"the GGUF is {info.bytes} bytes, more than memory_budget_bytes={budget.limit}")
        with budget.lock:  # room is made and used by one load at a time
            if self.holder.current is not None and budget.limit is not None:
                self.holder.wait_retired(self.config.wait_timeout_s)  # a draining old version may free enough
            if budget.make_room(info.bytes, owner=self.owner, abandoned=self._abandoned):
                slot, smoke = self._load_and_smoke(info)
                old = self.holder.install(slot)
                if old is not None:
                    threading.Thread(target=self.holder.retire, args=(old, self.config.wait_timeout_s),
                                     name=f"retire-v{old.info.version}", daemon=True).start()
                return smoke
            if self.holder.current is None:
                raise NoRoom("nobody waits for it any more" if self._abandoned() else
                             f"{info.bytes} bytes do not fit memory_budget_bytes={budget.limit} while the other "
                             "models are busy; retried on the next request")
            return self._paused_install(info)

    def _paused_install(self, info: ModelInfo) -> SmokeResult:
        """The new version does not fit beside the old one: hold new requests, drain and unload the old, load the
        new; on failure reload the old one before releasing the queue."""
        log.info("v%s does not fit beside the served model (memory_budget_bytes=%s): swapping with a queue",
                 info.version, self.budget.limit)
        with self.holder.paused_swap():
            old = self.holder.take_current()
            if old is not None and not old.close_when_idle(self.config.wait_timeout_s):
                log.warning("v%s still had requests after %ss; unloaded anyway", old.info.version,
                            self.config.wait_timeout_s)
            try:
                if not self.budget.make_room(info.bytes, owner=self.owner):
                    raise NoRoom(f"no room for {info.bytes} bytes within memory_budget_bytes="
                                 f"{self.budget.limit} while the other models are busy; tried again on the next poll")
                slot, smoke = self._load_and_smoke(info)
            except SwapFailed:
                if old is not None:
                    try:
                        restored, _ = self._load_and_smoke(old.info, smoke=False)
                        self.holder.install(restored)
                    except SwapFailed as exc:
                        log.error("could not reload v%s after the failed swap; serving nothing: %s",
                                  old.info.version, exc)
                raise
            self.holder.install(slot)
            return smoke

    def _load_and_smoke(self, info: ModelInfo, smoke: bool = True) -> tuple[ModelSlot, SmokeResult]:
        try:
            slot = ModelSlot(info, self.config.n_ctx, self.config.n_threads,
                             llama_repack=self.config.llama_repack, on_death=self._wake.set)
        except SlotError as exc:  # a bad file: llama.cpp refused it, or crashed its process, never this one
            raise SwapFailed("load", f"llama.cpp could not load {info.uri or info.path}: {exc}") from exc
        if not smoke:
            return slot, SmokeResult(True, 0, 0, None, 0.0, 0.0, "not run (reloading the model that served)")
        cfg = self.config
        required = required_accuracy(cfg.smoke_min_accuracy, info.recorded_accuracy, cfg.smoke_tolerance)
        # The smoke items are the bunny's benchmark decoded with its grammar: a model of another task answers one
        # chat as it will be served, checked against its answer schema when it has one (run_smoke with no rows).
        rows = self._smoke_rows if info.scorer == "pet" else []
        params = {"rows": rows, "required": required, "max_tokens": cfg.pet_max_tokens, "serving": info.serving}
        try:
            result = SmokeResult(**slot.submit("smoke", params).result(timeout=cfg.wait_timeout_s * 5))
        except Exception as exc:
            slot.close_when_idle()
            raise SwapFailed("smoke", f"the smoke evaluation crashed: {type(exc).__name__}: {exc}") from exc
        if not result.passed:
            slot.close_when_idle()
            raise SwapFailed("smoke", result.reason)
        return slot, result

    def _abandoned(self) -> bool:
        return bool(self.on_demand and self.holder.current is None and self.owner is not None
                    and self.owner.load_waiters == 0)

    def shas_in_use(self) -> set:
        """Files this follower needs kept: the served one, the one it replaced (a rollback needs no download) and
        the alias's target (fetched, perhaps not loaded yet)."""
        current = self.holder.current
        return {sha for sha in (current.info.sha256 if current else None, self.previous_sha,
                                self.record.gguf_sha256 if self.record else None) if sha}

    def _evict_cache(self, keep: set) -> None:
        """Drop cached files no served model needs (the cache is shared by every model's follower). A draining
        model's file may go too: its mapping stays valid until the model is closed."""
        for path in self.cache_dir.glob("*.gguf"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)

    # ---- report ------------------------------------------------------------------------------------------

    def status(self) -> dict:
        return {"alias": self.ref, "alias_version": self.alias_version, "checked_at": self.checked_at,
                "loaded": self.holder.current is not None, "wanted": self.wanted,
                "registry_error": self.registry_error, "swapping_to": self.swapping,
                "last_swap": self.last_swap, "last_failure": self.last_failure}


def _actor(name: str) -> str:
    return f"{name}@{socket.gethostname()}"
