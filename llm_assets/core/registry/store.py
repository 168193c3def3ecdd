"""ModelRegistry: versions of each model, the `production` / `previous` aliases, and their append-only history.

Every write runs in one transaction that first locks the model's row (SELECT ... FOR UPDATE on PostgreSQL,
BEGIN IMMEDIATE on SQLite), so concurrent writers (the promotion sensor, the CLI, several processes) queue
up: version numbers never collide and exactly one version is production.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Callable

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from llm_assets.core.registry.engine import (
    WRITE_OPTION, create_registry_engine, default_registry_url, mask_url, masking, normalize_url, upgrade_to_head,
)
from llm_assets.core.registry.errors import RegistryConflictError, RegistryError, RegistryNotFoundError
from llm_assets.core.registry.models import (
    PREVIOUS, PRODUCTION, STAGING, VERSION_FIELDS, Alias, AliasHistory, Model, ModelVersion, utcnow,
)
from llm_assets.core.registry.records import HistoryEvent, ModelSummary, VersionRecord, iso

NO_PRODUCTION = 0  # expected_current value meaning "no version is production yet"
Verifier = Callable[[str, str], bool]  # verify(uri, sha256) -> the artifact still has these bytes


class ModelRegistry:
    """The lineage-tracked model registry. `url`: sqlite:///PATH (default: see default_registry_url), a plain
    path, or postgresql://...; a wait for a lock or a connection is bounded by `timeout_s`, a statement by
    twice that, and each surfaces as RegistryError."""

    def __init__(self, url: str | None = None, timeout_s: float = 10):
        self.url = normalize_url(url or default_registry_url())
        self.masked_url = mask_url(self.url)
        self.timeout_s = timeout_s
        self._mask = masking(self.url)
        self._engine = None
        with self._errors("open"):
            self._engine = create_registry_engine(self.url, timeout_s)
            try:
                upgrade_to_head(self._engine)
            except BaseException:
                self._engine.dispose()
                raise
        self._reader = sessionmaker(self._engine, expire_on_commit=False)
        self._writer = sessionmaker(self._engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False)

    def __repr__(self) -> str:
        return f"ModelRegistry({self.masked_url!r})"

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- reads -------------------------------------------------------------------------------------------

    def get(self, model: str, version: int) -> VersionRecord:
        with self._tx("get") as s:
            m = self._model(s, model)
            return self._record(s, m, self._version(s, m, version))

    def resolve(self, model: str, ref: int | str) -> VersionRecord:
        """A version number (3, "3"), or an alias name ("production", "@production"); "latest" is the newest
        version unless an alias has that name."""
        if isinstance(ref, int) or str(ref).lstrip("@").isdigit():
            return self.get(model, int(str(ref).lstrip("@")))
        name = str(ref).lstrip("@")
        with self._tx("resolve") as s:
            m = self._model(s, model)
            alias = s.scalars(select(Alias).where(Alias.model_id == m.id, Alias.name == name)).one_or_none()
            if alias is not None:
                return self._record(s, m, s.get(ModelVersion, alias.version_id))
            if name == "latest":
                latest = s.scalars(select(ModelVersion).where(ModelVersion.model_id == m.id)
                                   .order_by(ModelVersion.version.desc()).limit(1)).first()
                if latest is not None:
                    return self._record(s, m, latest)
            known = ", ".join(sorted(self._aliases(s, m))) or "none"
            raise RegistryNotFoundError(f"model {model!r} has no alias {name!r} (aliases: {known})")

    def list_models(self) -> list[ModelSummary]:
        with self._tx("list models") as s:
            summaries = []
            for m in s.scalars(select(Model).order_by(Model.name)):
                count, latest = s.execute(select(func.count(ModelVersion.id), func.max(ModelVersion.version))
                                          .where(ModelVersion.model_id == m.id)).one()
                summaries.append(ModelSummary(m.name, count, latest, self._aliases(s, m), iso(m.created_at)))
            return summaries

    def list_versions(self, model: str) -> list[VersionRecord]:
        with self._tx("list versions") as s:
            m = self._model(s, model)
            rows = s.scalars(select(ModelVersion).where(ModelVersion.model_id == m.id).order_by(ModelVersion.version))
            names = self._alias_names_by_version_id(s, m)
            return [self._record(s, m, row, names) for row in rows]

    def versions_with_gguf(self, sha256: str) -> list[VersionRecord]:
        """Every version whose GGUF has this sha256 (a file found on a disk, traced back)."""
        with self._tx("find gguf") as s:
            rows = s.scalars(select(ModelVersion).where(ModelVersion.gguf_sha256 == sha256)
                             .order_by(ModelVersion.model_id, ModelVersion.version)).all()
            return [self._record(s, s.get(Model, row.model_id), row) for row in rows]

    def history(self, model: str) -> list[HistoryEvent]:
        with self._tx("history") as s:
            m = self._model(s, model)
            rows = s.scalars(select(AliasHistory).where(AliasHistory.model_id == m.id).order_by(AliasHistory.id))
            return [self._event(m, row) for row in rows]

    def lineage(self, model: str, ref: int | str = PRODUCTION) -> dict:
        """Where a served model came from: alias -> version -> GGUF -> evaluation and gate -> adapter ->
        base model -> training dataset -> benchmark, plus the Dagster run and any extra entries."""
        r = self.resolve(model, ref)
        chain = [
            {"kind": "alias", "names": r.aliases, "ref": str(ref)},
            {"kind": "version", "model": r.model, "version": r.version, "status": r.status,
             "created_at": r.created_at, "dagster_run_id": r.dagster_run_id, "code_version": r.code_version},
            {"kind": "gguf", "uri": r.gguf_uri, "sha256": r.gguf_sha256, "bytes": r.gguf_bytes,
             "quantization": r.quantization},
            {"kind": "evaluation", "gate_passed": r.gate_passed, "gate_reason": r.gate_reason, "metrics": r.metrics},
            {"kind": "adapter", "uri": r.adapter_uri},
            {"kind": "base_model", "id": r.base_model_id, "revision": r.base_model_revision},
            {"kind": "dataset", "version": r.dataset_version, "rows": r.dataset_rows, "uris": r.dataset_uris},
            {"kind": "benchmark", "version": r.benchmark_version},
        ]
        extra = r.lineage if isinstance(r.lineage, list) else [r.lineage] if r.lineage else []
        chain += [{"kind": "extra", **e} if isinstance(e, dict) else {"kind": "extra", "value": e} for e in extra]
        return {"model": r.model, "version": r.version, "aliases": r.aliases, "status": r.status,
                "dagster_run_id": r.dagster_run_id, "materialization_ids": r.materialization_ids,
                "config": r.config, "chain": chain}

    # ---- writes ------------------------------------------------------------------------------------------

    def register(self, model: str, **fields) -> VersionRecord:
        """Add the next version of `model` (created if new); fields are the model_versions columns."""
        _check_model_name(model)
        unknown = sorted(set(fields) - set(VERSION_FIELDS))
        if unknown:
            raise RegistryError(f"register {model!r}: unknown field(s) {', '.join(unknown)}; "
                                f"known: {', '.join(VERSION_FIELDS)}")
        fields["status"] = fields.get("status") or "candidate"
        if fields["status"] not in ("candidate", "rejected"):
            raise RegistryError(f"register {model!r}: status={fields['status']!r}: a new version is 'candidate' "
                                f"or 'rejected'; use promote() to make one production")
        for name, value in fields.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise RegistryError(f"register {model!r}: field {name} is not JSON-serializable: {exc}") from None
        with self._tx("register", write=True) as s:
            m = self._lock_model(s, model, create=True)
            latest = s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == m.id))
            row = ModelVersion(model_id=m.id, version=(latest or 0) + 1, created_at=utcnow(), **fields)
            s.add(row)
            s.flush()
            return self._record(s, m, row, {})

    def set_status(self, model: str, version: int, status: str, actor: str = "api",
                   reason: str | None = None) -> VersionRecord:
        """Mark a version candidate, rejected or retired (promoted only through promote())."""
        if status not in ("candidate", "rejected", "retired"):
            raise RegistryError(f"status {status!r}: set_status takes candidate, rejected or retired "
                                f"(promote() makes a version production)")
        with self._tx("set status", write=True) as s:
            m = self._lock_model(s, model)
            row = self._version(s, m, version)
            production = self._aliases(s, m).get(PRODUCTION)
            if production == row.version:
                raise RegistryError(f"{model} v{version} is production: promote another version or roll back "
                                    f"before marking it {status}")
            why = f"status {row.status} -> {status}" + (f": {reason}" if reason else "")
            row.status = status
            self._append(s, m, "status", None, version, version, actor, why)
            return self._record(s, m, row)

    def promote(self, model: str, version: int, actor: str, reason: str | None = None,
                verify: Verifier | None = None, expected_current: int | None = None) -> VersionRecord:
        """Make `version` production; the old production becomes `previous` (retired). One transaction.

        Refused for a rejected version, one whose gate did not pass, or (with `verify`) one whose GGUF no
        longer matches its sha256. `expected_current`: the production version the caller saw (NO_PRODUCTION
        for none); if production moved meanwhile, RegistryConflictError. Promoting the production version
        again changes nothing.
        """
        target = self.get(model, version)
        _check_promotable(target)
        if verify is not None:
            _verify(target, verify, "promote")
        with self._tx("promote", write=True) as s:
            m = self._lock_model(s, model)
            row = self._version(s, m, version)
            _check_promotable(self._record(s, m, row, {}))  # its status may have changed since the read above
            aliases = self._alias_rows(s, m)
            current = s.get(ModelVersion, aliases[PRODUCTION].version_id) if PRODUCTION in aliases else None
            seen = current.version if current else NO_PRODUCTION
            if expected_current is not None and seen != expected_current:
                raise RegistryConflictError(
                    f"{model}: production is {f'v{seen}' if current else 'unset'}, not the expected "
                    f"{f'v{expected_current}' if expected_current else 'unset'}: it moved meanwhile; re-read and retry")
            if current is not None and current.id == row.id:
                return self._record(s, m, row)
            now = utcnow()
            self._move(s, m, aliases, PRODUCTION, row, now)
            self._append(s, m, "promote", PRODUCTION, current.version if current else None, version, actor, reason,
                         now)
            if current is not None:
                before = s.get(ModelVersion, aliases[PREVIOUS].version_id).version if PREVIOUS in aliases else None
                self._move(s, m, aliases, PREVIOUS, current, now)
                current.status = "retired"
                self._append(s, m, "promote", PREVIOUS, before, current.version, actor, reason, now)
            row.status = "promoted"
            return self._record(s, m, row)

    def rollback(self, model: str, actor: str, reason: str | None = None,
                 verify: Verifier | None = None) -> VersionRecord:
        """Swap production and previous (with history); returns the new production version."""
        before = self.resolve(model, PREVIOUS) if self._has_alias(model, PREVIOUS) else None
        if before is None:
            raise RegistryError(f"cannot roll back {model}: there is no previous production version")
        if verify is not None:
            _verify(before, verify, "roll back to")
        with self._tx("rollback", write=True) as s:
            m = self._lock_model(s, model)
            aliases = self._alias_rows(s, m)
            if PRODUCTION not in aliases or PREVIOUS not in aliases:
                raise RegistryConflictError(f"cannot roll back {model}: production or previous vanished meanwhile")
            current = s.get(ModelVersion, aliases[PRODUCTION].version_id)
            target = s.get(ModelVersion, aliases[PREVIOUS].version_id)
            if target.version != before.version:
                raise RegistryConflictError(f"cannot roll back {model}: previous moved from v{before.version} to "
                                            f"v{target.version} meanwhile; retry")
            if target.status == "rejected":
                raise RegistryError(f"cannot roll back {model} to v{target.version}: it was rejected")
            now = utcnow()
            self._move(s, m, aliases, PRODUCTION, target, now)
            self._move(s, m, aliases, PREVIOUS, current, now)
            target.status, current.status = "promoted", "retired"
            self._append(s, m, "rollback", PRODUCTION, current.version, target.version, actor, reason, now)
            self._append(s, m, "rollback", PREVIOUS, target.version, current.version, actor, reason, now)
            return self._record(s, m, target)

    def stage(self, model: str, version: int, actor: str, reason: str | None = None) -> VersionRecord:
        """Point `staging` at a candidate that passed its gate (the challenger awaiting promotion), with history."""
        with self._tx("stage", write=True) as s:
            m = self._lock_model(s, model)
            row = self._version(s, m, version)
            if row.status != "candidate" or not row.gate_passed:
                raise RegistryError(f"cannot stage {model} v{version}: it is {row.status}, gate "
                                    f"{'passed' if row.gate_passed else 'not passed'}")
            aliases = self._alias_rows(s, m)
            before = s.get(ModelVersion, aliases[STAGING].version_id).version if STAGING in aliases else None
            now = utcnow()
            self._move(s, m, aliases, STAGING, row, now)
            self._append(s, m, "stage", STAGING, before, version, actor, reason, now)
            return self._record(s, m, row)

    def note(self, model: str, version: int | None, text: str, actor: str) -> HistoryEvent:
        """Append an event to the history without moving an alias (e.g. the server's failed model swap)."""
        with self._tx("note", write=True) as s:
            m = self._lock_model(s, model)
            if version is not None:
                self._version(s, m, version)
            row = self._append(s, m, "note", None, None, version, actor, text)
            s.flush()
            return self._event(m, row)

    # ---- internals ---------------------------------------------------------------------------------------

    @contextmanager
    def _errors(self, op: str):
        try:
            yield
        except RegistryError:
            raise
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            detail = " ".join(str(orig).split()) or type(orig).__name__
            if "locked" in detail or "lock timeout" in detail:
                detail += f" (another writer held it longer than timeout_s={self.timeout_s:g})"
            raise RegistryError(self._mask(f"registry {self.masked_url}: {op} failed: {detail}")) from exc

    @contextmanager
    def _tx(self, op: str, write: bool = False):
        with self._errors(op), (self._writer if write else self._reader)() as session, session.begin():
            yield session

    def _model(self, s: Session, name: str) -> Model:
        m = s.scalars(select(Model).where(Model.name == name)).one_or_none()
        if m is None:
            known = ", ".join(s.scalars(select(Model.name).order_by(Model.name))) or "none"
            raise RegistryNotFoundError(f"unknown model {name!r} (known: {known})")
        return m

    def _lock_model(self, s: Session, name: str, create: bool = False) -> Model:
        """The model's row, locked until commit: the one lock every writer of this model queues on."""
        query = select(Model).where(Model.name == name).with_for_update()
        m = s.scalars(query).one_or_none()
        if m is None and not create:
            return self._model(s, name)  # raises the not-found error
        if m is None:
            try:
                with s.begin_nested():  # a concurrent first registration may insert the same name
                    m = Model(name=name, created_at=utcnow())
                    s.add(m)
            except IntegrityError:
                m = s.scalars(query).one()
        return m

    def _version(self, s: Session, m: Model, version: int) -> ModelVersion:
        row = s.scalars(select(ModelVersion).where(ModelVersion.model_id == m.id,
                                                   ModelVersion.version == int(version))).one_or_none()
        if row is None:
            have = s.execute(select(func.min(ModelVersion.version), func.max(ModelVersion.version))
                             .where(ModelVersion.model_id == m.id)).one()
            known = f"v{have[0]}..v{have[1]}" if have[0] is not None else "none"
            raise RegistryNotFoundError(f"model {m.name!r} has no version {version} (versions: {known})")
        return row

    def _alias_rows(self, s: Session, m: Model) -> dict[str, Alias]:
        return {a.name: a for a in s.scalars(select(Alias).where(Alias.model_id == m.id))}

    def _aliases(self, s: Session, m: Model) -> dict[str, int]:
        rows = s.execute(select(Alias.name, ModelVersion.version)
                         .join(ModelVersion, Alias.version_id == ModelVersion.id)
                         .where(Alias.model_id == m.id).order_by(Alias.name))
        return {name: version for name, version in rows}

    def _alias_names_by_version_id(self, s: Session, m: Model) -> dict[int, list[str]]:
        names: dict[int, list[str]] = {}
        for a in sorted(self._alias_rows(s, m).values(), key=lambda a: a.name):
            names.setdefault(a.version_id, []).append(a.name)
        return names

    def _has_alias(self, model: str, name: str) -> bool:
        with self._tx("resolve") as s:
            return name in self._aliases(s, self._model(s, model))

    def _move(self, s: Session, m: Model, aliases: dict[str, Alias], name: str, row: ModelVersion, now) -> None:
        if name in aliases:
            aliases[name].version_id, aliases[name].updated_at = row.id, now
        else:
            aliases[name] = Alias(model_id=m.id, name=name, version_id=row.id, updated_at=now)
            s.add(aliases[name])

    def _append(self, s: Session, m: Model, event: str, alias: str | None, from_version: int | None,
                to_version: int | None, actor: str, reason: str | None, at=None) -> AliasHistory:
        row = AliasHistory(model_id=m.id, event=event, alias=alias, from_version=from_version,
                           to_version=to_version, actor=actor, reason=reason, at=at or utcnow())
        s.add(row)
        return row

    def _record(self, s: Session, m: Model, row: ModelVersion, names: dict[int, list[str]] | None = None
                ) -> VersionRecord:
        s.flush()  # alias moves of this transaction count
        names = self._alias_names_by_version_id(s, m) if names is None else names
        values = {f: getattr(row, f) for f in VERSION_FIELDS}
        return VersionRecord(model=m.name, version=row.version, aliases=names.get(row.id, []),
                             created_at=iso(row.created_at), **values)

    @staticmethod
    def _event(m: Model, row: AliasHistory) -> HistoryEvent:
        return HistoryEvent(row.id, m.name, row.event, row.alias, row.from_version, row.to_version, row.actor,
                            row.reason, iso(row.at))


def _check_model_name(name) -> None:
    if not isinstance(name, str) or not name.strip() or "@" in name or len(name) > 200 or name != name.strip():
        raise RegistryError(f"model name {name!r}: want 1-200 characters, no '@' (it separates the version "
                            f"or alias on the command line), no surrounding spaces")


def _check_promotable(r: VersionRecord) -> None:
    if r.status == "rejected":
        raise RegistryError(f"refusing to promote {r.model} v{r.version}: it is rejected")
    if r.gate_passed is not True:
        why = r.gate_reason or "no gate result recorded"
        raise RegistryError(f"refusing to promote {r.model} v{r.version}: its accuracy gate did not pass ({why})")


def _verify(r: VersionRecord, verify: Verifier, what: str) -> None:
    if not r.gguf_uri or not r.gguf_sha256:
        raise RegistryError(f"refusing to {what} {r.model} v{r.version}: no GGUF uri and sha256 recorded to verify")
    try:
        ok = verify(r.gguf_uri, r.gguf_sha256)
    except Exception as exc:  # the verifier is the caller's storage code: any failure means "not verified"
        raise RegistryError(f"refusing to {what} {r.model} v{r.version}: could not verify {r.gguf_uri}: "
                            f"{type(exc).__name__}: {exc}") from exc
    if not ok:
        raise RegistryError(f"refusing to {what} {r.model} v{r.version}: {r.gguf_uri} no longer matches its "
                            f"recorded sha256 {r.gguf_sha256}")
