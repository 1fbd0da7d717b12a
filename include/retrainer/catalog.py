"""The batch catalog: every landed batch, its content hash, its period and what validation said of it.

Layout under a project's ``data.root_uri``::

    landing/<batch>.parquet                  new batches: an inbox, emptied as they are registered
    landing/rejected/<file> + .error.txt     files that cannot become a batch: a registered id with other content,
                                             the content of a registered batch under a new name, an unusable name
    batches/<batch>.parquet                  registered batches, immutable, owned by the platform
    catalog/<batch>.json                     one record per batch (hash, rows, period, status)
    catalog/_landed/<batch>                  index: batches awaiting validation
    catalog/_accepted/<newest-first key>     index: accepted batches, newest period first (the window)
    catalog/_quarantined/<batch>             index: quarantined batches
    catalog/_sha256/<content hash>           index: the batch registered with that content
    quarantine/<batch>/<batch>.parquet       batches that failed validation ...
    quarantine/<batch>/validation.json       ... with their validation report
    labels/<batch>.parquet                   late labels of a batch that landed without them (an inbox too)
    labels/attached/<batch>.parquet          late labels attached to their batch, immutable
    labels/rejected/<file> + .error.txt      label files that cannot be used, with the reason

Every file in ``landing/`` ends registered (then accepted or quarantined), in ``landing/rejected/`` with the
reason, or left where it is with a logged reason (a name that does not match ``data.file_pattern``, a hidden name):
nothing is ignored silently. A batch is never deleted: a registered one is moved (copied, verified, then removed)
from ``landing/`` to ``batches/``, a failing one from there into quarantine. So the zones the steps and watchers
list hold only what is new, whatever the history (batches registered by versions before ``batches/`` existed stay
where they are).

Several processes change the catalog at once (the drift monitor and the weekly cycle, on different workers),
so records are written conditionally: a record is created only if none exists (a second registration of the
same batch loses, it cannot turn an accepted batch back into a landed one), and changed only if it is still
the version that was read (compare-and-swap; a loser reads again and re-applies its change when it still
applies). The index folders let a step find pending batches and the newest accepted ones without reading
every record: its cost does not grow with the weeks already landed. Index entries are hints, always checked
against the record they point to.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from retrainer import storage

if TYPE_CHECKING:
    import pandas as pd

    from retrainer.config import ProjectConfig


log = logging.getLogger(__name__)


class BatchStatus(StrEnum):
    """Lifecycle of a batch."""

    LANDED = "landed"
    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"


class CatalogError(RuntimeError):
    """A batch is unknown, unreadable, or its content no longer matches its recorded hash."""


@dataclass(frozen=True)
class BatchRecord:
    """What the catalog knows of one batch."""

    batch_id: str
    uri: str
    sha256: str
    rows: int
    period_start: str
    period_end: str
    status: BatchStatus = BatchStatus.LANDED
    registered_at: str = ""
    validated_at: str | None = None
    validation: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] | None = None  # late labels: uri, sha256, rows, labelled, registered_at

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "status": BatchStatus(data["status"])})

    @property
    def period_end_ts(self) -> datetime:
        """End of the batch's period (its newest timestamp) as an aware datetime."""
        return _parse_ts(self.period_end)


@dataclass(frozen=True)
class LandingOutcome:
    """What :meth:`Catalog.scan_landing` did with each file of the landing zone.

    Attributes:
        registered: New records, oldest period first: ``landed``, or ``quarantined`` for files that cannot be
            read as a batch of the project (with a report naming the problem).
        rejected: ``(file name, reason)`` of files moved to ``landing/rejected/`` beside a ``.error.txt``.
        ignored: ``(file name, reason)`` of files left in place, each logged as a warning on every scan.
    """

    registered: list[BatchRecord] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)


def batch_id_problem(batch_id: str) -> str | None:
    """Why a name cannot be a batch id (it becomes a file name, an S3 key, a tag and a URL part), or None."""
    if not _BATCH_ID.match(batch_id) or ".." in batch_id:
        return (
            f"{batch_id!r} is not a usable batch id: use ASCII letters, digits, '.', '_' and '-', starting with a "
            "letter or digit, without '..'"
        )
    return None


@dataclass(frozen=True)
class LabelsOutcome:
    """What :meth:`Catalog.register_labels` did.

    Attributes:
        registered: Records that got their late labels.
        waiting: Batch ids whose labels wait for the batch to be validated.
        rejected: ``(file name, reason)`` of label files moved to ``labels/rejected/``.
    """

    registered: list[BatchRecord] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


_INDEX_VERSION = 2  # 2: the content-hash index
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FUTURE_TOLERANCE = timedelta(days=1)  # clocks and time zones of producers differ; beyond this is an error
_UPDATE_ATTEMPTS = 20
_NEWEST_FIRST_MAX = 10**18 - 1  # window keys: this minus the period end in microseconds, zero-padded


def _newest_first(ts: datetime) -> int:
    return _NEWEST_FIRST_MAX - int(ts.timestamp() * 1_000_000)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parse_ts(value: str | datetime) -> datetime:
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


class Catalog:
    """Batch catalog of one project.

    Args:
        config: The project whose ``data.root_uri`` holds the zones.
    """

    def __init__(self, config: ProjectConfig) -> None:
        self.config = config
        root = config.data.root_uri
        self.landing = storage.join(root, "landing")
        self.batches = storage.join(root, "batches")
        self.quarantine = storage.join(root, "quarantine")
        self.records = storage.join(root, "catalog")
        self.reports = storage.join(root, "reports")
        self.labels = storage.join(root, "labels")
        self._indexed = False

    # -- records ------------------------------------------------------------------------------------------
    def _record_uri(self, batch_id: str) -> str:
        return storage.join(self.records, f"{batch_id}.json")

    def _index_uri(self, index: str, name: str) -> str:
        return storage.join(self.records, f"_{index}", name)

    def _accepted_key(self, record: BatchRecord) -> str:
        return f"{_newest_first(record.period_end_ts):018d}_{record.batch_id}"

    def _create(self, record: BatchRecord) -> bool:
        """Create a batch's record, only if it has none yet (``False``: someone registered it first)."""
        self._ensure_index()
        if record.status is BatchStatus.LANDED:  # the hint first: a hint without a record is ignored
            storage.write_bytes(self._index_uri("landed", record.batch_id), b"")
        if not storage.exists(self._index_uri("sha256", record.sha256)):  # the first batch with it keeps it
            storage.write_bytes(self._index_uri("sha256", record.sha256), record.batch_id.encode())
        return storage.create_bytes(self._record_uri(record.batch_id), _encode(record))

    def by_content(self, sha256: str) -> BatchRecord | None:
        """The registered batch whose content has this hash, or None."""
        self._ensure_index()
        uri = self._index_uri("sha256", sha256)
        if not storage.exists(uri):
            return None
        record = self._find(storage.read_bytes(uri).decode())
        return record if record is not None and record.sha256 == sha256 else None

    def _update(self, batch_id: str, change: Callable[[BatchRecord], BatchRecord | None]) -> BatchRecord:
        """Apply ``change`` to the current record and write it only if nobody changed it meanwhile.

        ``change`` gets the record as it is now and returns the new one, or None when there is nothing to do;
        it may raise :class:`CatalogError` when the change no longer applies. After a lost race it is applied
        again to the record the winner wrote.
        """
        uri = self._record_uri(batch_id)
        for _ in range(_UPDATE_ATTEMPTS):
            if not storage.exists(uri):
                raise CatalogError(f"batch {batch_id!r} is not in the catalog of {self.config.name}")
            data, version = storage.read_versioned(uri)
            current = BatchRecord.from_dict(json.loads(data))
            changed = change(current)
            if changed is None:
                return current
            if changed.status is BatchStatus.ACCEPTED and current.status is not BatchStatus.ACCEPTED:
                storage.write_bytes(self._index_uri("accepted", self._accepted_key(changed)), b"")
            if changed.status is BatchStatus.QUARANTINED and current.status is not BatchStatus.QUARANTINED:
                storage.write_bytes(self._index_uri("quarantined", batch_id), b"")
            try:
                storage.replace_bytes(uri, _encode(changed), version)
            except storage.ConflictError:
                log.info("catalog record of %s changed meanwhile: applying the change again", batch_id)
                continue
            if changed.status is not BatchStatus.LANDED:
                storage.delete(self._index_uri("landed", batch_id))
            return changed
        raise CatalogError(f"catalog record of {batch_id} kept changing: gave up after {_UPDATE_ATTEMPTS} tries")

    def _ensure_index(self) -> None:
        """Build the index folders once for a catalog written before they existed (reads every record once)."""
        if self._indexed:
            return
        marker = storage.join(self.records, "_index.json")
        try:  # one request: read the marker, and take a failed read as no index yet
            version = json.loads(storage.read_bytes(marker)).get("version")
        except storage.StorageError:
            version = None
        if version == _INDEX_VERSION:
            self._indexed = True
            return
        for record in self.all():
            if not storage.exists(self._index_uri("sha256", record.sha256)):
                storage.write_bytes(self._index_uri("sha256", record.sha256), record.batch_id.encode())
            if record.status is BatchStatus.LANDED:
                storage.write_bytes(self._index_uri("landed", record.batch_id), b"")
            elif record.status is BatchStatus.ACCEPTED:
                storage.write_bytes(self._index_uri("accepted", self._accepted_key(record)), b"")
            else:
                storage.write_bytes(self._index_uri("quarantined", record.batch_id), b"")
        storage.write_bytes(marker, json.dumps({"version": _INDEX_VERSION, "built_at": _now()}).encode())
        self._indexed = True

    def _find(self, batch_id: str) -> BatchRecord | None:
        """The record of a batch, None when there is none (one created meanwhile by another process is read)."""
        uri = self._record_uri(batch_id)
        for _ in range(3):
            try:
                return BatchRecord.from_dict(json.loads(storage.read_bytes(uri)))
            except storage.StorageError:
                if not storage.exists(uri):
                    return None
        return BatchRecord.from_dict(json.loads(storage.read_bytes(uri)))

    def get(self, batch_id: str) -> BatchRecord:
        """The record of one batch.

        Raises:
            CatalogError: No batch with that id was registered.
        """
        record = self._find(batch_id)
        if record is None:
            raise CatalogError(f"batch {batch_id!r} is not in the catalog of {self.config.name}")
        return record

    def all(self) -> list[BatchRecord]:
        """Every registered batch, oldest period first (reads every record: for reports, not for steps)."""
        records = [
            BatchRecord.from_dict(json.loads(storage.read_bytes(uri)))
            for uri in storage.list_files(self.records, "*.json")
            if not storage.basename(uri).startswith("_")
        ]
        return sorted(records, key=lambda r: (r.period_end_ts, r.batch_id))

    # -- landing ------------------------------------------------------------------------------------------
    def land(self, batch_id: str, frame: pd.DataFrame) -> str:
        """Write a new batch into the landing zone (what an upstream producer does).

        Landing the same content again is a no-op, even after the batch was validated or quarantined.

        Returns:
            Where the batch is now (its landing URI, or its quarantine URI if it was quarantined).

        Raises:
            storage.StorageError: A batch with that id already landed with other content.
        """
        data = storage.parquet_bytes(frame)
        if storage.exists(self._record_uri(batch_id)):
            record = self.get(batch_id)
            if record.sha256 != storage.sha256_bytes(data):
                raise storage.StorageError(
                    f"batch {batch_id} already landed ({record.status.value}) with other content; batches are "
                    "immutable: land the correction under a new batch id"
                )
            return record.uri
        uri = storage.join(self.landing, f"{batch_id}.parquet")
        storage.write_bytes(uri, data, overwrite=False)
        return uri

    def register_new(self) -> list[BatchRecord]:
        """Register every batch file in the landing zone (see :meth:`scan_landing`); returns the new records."""
        return self.scan_landing().registered

    def scan_landing(self) -> LandingOutcome:
        """Look at every file in the landing zone: register batches, reject what cannot be one, say why.

        A file whose name matches ``data.file_pattern`` (in any letter case) becomes a batch named after it, and
        moves to ``batches/``. One that cannot be read as a batch of the project (not Parquet, no rows, too
        large, timestamps missing, without a time zone, in the future or outside the batch's period) is
        quarantined at once with a report naming the problem, so one bad file never blocks the others. A file
        moves to ``landing/rejected/`` with the reason when its name is no usable batch id, when its batch id
        is registered with other content (batches are immutable), or when its content is that of a registered
        batch under another name (it would be trained on twice); the same content under its own id again is
        a leftover, dropped. Other files (other names, hidden names) stay where they are, logged with the
        reason on every scan. A batch another process registers at the same time is left to it.
        """
        self._ensure_index()
        outcome = LandingOutcome()
        pattern = self.config.data.file_pattern.lower()
        for uri in storage.list_files(self.landing, "*", hidden=True):
            name = storage.basename(uri)
            if name.startswith("."):
                outcome.ignored.append((name, "hidden name (a leading '.' marks a file being written): not read"))
                continue
            if not fnmatch.fnmatchcase(name.lower(), pattern):
                outcome.ignored.append(
                    (name, f"does not match data.file_pattern {self.config.data.file_pattern!r}")
                )
                continue
            batch_id = name.rsplit(".", 1)[0]
            problem = batch_id_problem(batch_id)
            if problem is not None:
                outcome.rejected.append((name, self._reject_landed(uri, f"{name}: {problem}")))
                continue
            try:
                registered = self._register_file(uri, batch_id, outcome)
            except storage.StorageError:
                if storage.exists(uri):
                    raise
                continue  # registered (and moved on) by another process since the listing
            if registered is not None:
                outcome.registered.append(registered)
        for name, reason in outcome.ignored:
            log.warning("landing file %s left in place: %s", name, reason)
        outcome.registered.sort(key=lambda r: (r.period_end_ts, r.batch_id))
        return outcome

    def _register_file(self, uri: str, batch_id: str, outcome: LandingOutcome) -> BatchRecord | None:
        """Register one landing file as ``batch_id``; None when it became no new record."""
        now = _now()
        limit = self.config.data.max_file_mb
        size = storage.size(uri)
        if size > limit * 1024 * 1024:
            # Refused before it is read: a batch this large would not fit the memory the steps have.
            reason = (
                f"batch {batch_id}: the file is {size / 1024 / 1024:,.1f} MB, more than data.max_file_mb "
                f"({limit:g} MB): split it into smaller batches or raise the limit"
            )
            return self._quarantine_on_arrival(batch_id, uri, storage.sha256_of(uri), reason, now)
        data = storage.read_bytes(uri)
        sha256 = storage.sha256_bytes(data)
        known = self._find(batch_id)
        if known is not None:
            reason = self._landed_again(known, uri, sha256)
            if reason is not None:
                outcome.rejected.append((storage.basename(uri), reason))
            return None
        twin = self.by_content(sha256)
        if twin is not None and twin.batch_id == batch_id:
            return None  # another process registered this very file since it was read: left to it
        if twin is not None:
            reason = (
                f"{storage.basename(uri)}: same content as batch {twin.batch_id} ({twin.status.value}, sha256 "
                f"{sha256[:12]}…): a batch is registered once, or it would be trained on twice"
            )
            outcome.rejected.append((storage.basename(uri), self._reject_landed(uri, reason)))
            return None
        try:
            start, end, rows = self._inspect(data, uri, batch_id)
        except CatalogError as error:
            return self._quarantine_on_arrival(batch_id, uri, sha256, str(error), now)
        # Copied first, recorded second, removed from landing last: a crash in between repeats a step.
        target = storage.join(self.batches, storage.basename(uri))
        storage.write_bytes(target, data, overwrite=False)
        record = BatchRecord(
            batch_id=batch_id,
            uri=target,
            sha256=sha256,
            rows=rows,
            period_start=start,
            period_end=end,
            registered_at=now,
        )
        created = self._create(record)
        if not created:
            log.info("batch %s was registered by another process meanwhile", batch_id)
        storage.delete(uri)
        return record if created else None

    def _quarantine_on_arrival(
        self, batch_id: str, uri: str, sha256: str, error: str, now: str
    ) -> BatchRecord | None:
        record = BatchRecord(batch_id, uri, sha256, 0, now, now, registered_at=now)
        if not self._create(record):
            return None
        log.warning("quarantined %s on arrival: %s", batch_id, error)
        return self.quarantine_batch(batch_id, {"batch_id": batch_id, "success": False, "error": error})

    def _reject_landed(self, uri: str, reason: str) -> str:
        """Move a landing file to ``landing/rejected/`` beside a ``.error.txt`` with the reason; returns it."""
        target = storage.join(
            self.landing, "rejected", f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{storage.basename(uri)}"
        )
        storage.write_bytes(f"{target}.error.txt", f"{reason}\n".encode())
        storage.move(uri, target)
        log.warning("rejected %s, moved to %s", reason, target)
        return reason

    def _landed_again(self, record: BatchRecord, uri: str, sha256: str) -> str | None:
        """A landing file whose batch id is registered: a leftover, a duplicate, or a forbidden correction.

        Returns:
            The reason it was rejected, or None when it was a leftover.
        """
        if record.uri == uri:
            return None  # registered before batches/ existed: it stays where its record says it is
        if record.sha256 == sha256:
            storage.delete(uri)  # the same content is stored already (or a crash left the landing copy)
            return None
        return self._reject_landed(
            uri,
            f"{storage.basename(uri)}: batch {record.batch_id} is already registered ({record.status.value}) with "
            f"other content (sha256 {record.sha256[:12]}…, this file {sha256[:12]}…); batches are immutable: "
            "land the correction under a new batch id",
        )

    def _inspect(self, data: bytes, uri: str, batch_id: str) -> tuple[str, str, int]:
        """Period and rows of a landing file, after checking its timestamps can place it in time.

        Raises:
            CatalogError: Naming what is wrong: unreadable, no rows, no timestamp column, timestamps that are not
                timestamps, have no time zone (unless ``schema.naive_timezone`` says which), are missing, lie in
                the future or outside the batch's period (``data.period_days``).
        """
        import pandas as pd

        ts_col = self.config.schema_.timestamp
        frame = _read_frame(data, uri)
        if ts_col not in frame.columns:
            raise CatalogError(f"batch {batch_id} has no timestamp column {ts_col!r}")
        raw = frame[ts_col]
        if not pd.api.types.is_datetime64_any_dtype(raw):
            raise CatalogError(
                f"batch {batch_id}: column {ts_col!r} holds {raw.dtype} values, not timestamps (land a Parquet "
                "timestamp column; text with mixed or missing UTC offsets cannot be placed in time unambiguously)"
            )
        if getattr(raw.dt, "tz", None) is None and self.config.schema_.naive_timezone is None:
            raise CatalogError(
                f"batch {batch_id}: timestamps in {ts_col!r} have no time zone; land them with one, or set "
                "schema.naive_timezone to the zone they are in (e.g. UTC)"
            )
        timestamps = _to_utc(raw, self.config.schema_.naive_timezone)
        missing = int(timestamps.isna().sum())
        if missing:
            raise CatalogError(f"batch {batch_id}: {missing} of {len(frame)} rows have no timestamp in {ts_col!r}")
        newest, oldest = timestamps.max(), timestamps.min()
        now = datetime.now(UTC)
        if newest > now + _FUTURE_TOLERANCE:
            late = int((timestamps > now + _FUTURE_TOLERANCE).sum())
            raise CatalogError(
                f"batch {batch_id}: {late} of {len(frame)} rows have timestamps in the future (newest "
                f"{newest.isoformat()}, now {now.isoformat(timespec='seconds')}): no cycle would ever be due to "
                "train on them"
            )
        period = self.config.data.period_days
        if period is not None:
            self._check_period(timestamps, batch_id, timedelta(days=period))
        return oldest.isoformat(), newest.isoformat(), len(frame)

    def _check_period(self, timestamps: pd.Series, batch_id: str, period: timedelta) -> None:
        """Rows must lie in the batch's period: from its id's date (an ISO date) for ``period``, else span it."""
        import pandas as pd

        try:
            start = pd.Timestamp(datetime.fromisoformat(batch_id[:10]).date(), tz="UTC")
        except ValueError:
            span = timestamps.max() - timestamps.min()
            if span > period:
                raise CatalogError(
                    f"batch {batch_id}: its timestamps span {span}, more than data.period_days ({period.days} "
                    "days): rows from another period are in it"
                ) from None
            return
        outside = (timestamps < start) | (timestamps >= start + period)
        if outside.any():
            example = timestamps[outside].iloc[0]
            raise CatalogError(
                f"batch {batch_id}: {int(outside.sum())} of {len(timestamps)} rows lie outside the batch's period "
                f"[{start.isoformat()}, {(start + period).isoformat()}) (its id's date and data.period_days), "
                f"e.g. {example.isoformat()}"
            )

    def landed(self) -> list[BatchRecord]:
        """Batches registered but not yet validated, oldest period first."""
        self._ensure_index()
        records = []
        for batch_id in storage.list_names(storage.join(self.records, "_landed")):
            record = self._find(batch_id)
            if record is not None and record.status is BatchStatus.LANDED:
                records.append(record)
        return sorted(records, key=lambda r: (r.period_end_ts, r.batch_id))

    def pending(self, cutoff: datetime) -> list[BatchRecord]:
        """Batches landed but not yet validated whose period ended by ``cutoff``, oldest first."""
        cutoff = _parse_ts(cutoff)
        return [r for r in self.landed() if r.period_end_ts <= cutoff]

    # -- validation outcomes ------------------------------------------------------------------------------
    def accept(self, batch_id: str, validation: dict[str, Any]) -> BatchRecord:
        """Mark a batch as accepted for training (once: a batch accepted meanwhile stays as it is).

        Raises:
            CatalogError: The batch was quarantined meanwhile.
        """

        def change(record: BatchRecord) -> BatchRecord | None:
            if record.status is BatchStatus.ACCEPTED:
                return None
            if record.status is BatchStatus.QUARANTINED:
                raise CatalogError(f"batch {batch_id} was quarantined meanwhile: it cannot be accepted")
            return replace(record, status=BatchStatus.ACCEPTED, validated_at=_now(), validation=validation)

        return self._update(batch_id, change)

    def quarantine_batch(self, batch_id: str, report: dict[str, Any]) -> BatchRecord:
        """Move a failing batch into quarantine beside its validation report; nothing is deleted.

        The report is written first, then the file is copied, the copy verified, and only then the original
        removed from the landing zone. A file whose content changed since it landed is flagged in the report.
        """
        record = self.get(batch_id)
        folder = storage.join(self.quarantine, batch_id)
        if record.status is not BatchStatus.QUARANTINED and storage.exists(record.uri):
            current = storage.sha256_of(record.uri)
            if current != record.sha256:
                # Still quarantined (never dropped), but the report says the file is not what landed.
                report = {**report, "content_changed_since_landing": True, "sha256_now": current}
        storage.write_bytes(storage.join(folder, "validation.json"), json.dumps(report, indent=2).encode())
        target = storage.join(folder, storage.basename(record.uri))
        if record.status is not BatchStatus.QUARANTINED and record.uri != target:
            if storage.exists(record.uri):
                storage.move(record.uri, target)
            elif not storage.exists(target):
                # Nothing left to move (the file vanished from landing); the record and report still say so.
                report = {**report, "file_missing": True}
                storage.write_bytes(storage.join(folder, "validation.json"), json.dumps(report, indent=2).encode())
        summary = {k: v for k, v in report.items() if k != "report"}
        validation = {**summary, "report_uri": storage.join(folder, "validation.json")}

        def change(current: BatchRecord) -> BatchRecord | None:
            if current.status is BatchStatus.QUARANTINED:
                return None
            return replace(
                current, uri=target, status=BatchStatus.QUARANTINED, validated_at=_now(), validation=validation
            )

        return self._update(batch_id, change)

    def evict(self, batch_id: str, reason: str, by: str) -> BatchRecord:
        """Quarantine a batch that passed validation (or awaits it): bad data that the checks let through.

        The file moves into quarantine beside a report saying who evicted it, when and why; the record keeps
        its hash and labels, so nothing is lost and the eviction shows wherever the batch does. Later windows
        no longer hold it.

        Raises:
            CatalogError: The batch is unknown or in quarantine already.
        """
        if not reason.strip():
            raise CatalogError(f"evicting batch {batch_id} needs a reason")
        record = self.get(batch_id)
        if record.status is BatchStatus.QUARANTINED:
            raise CatalogError(
                f"batch {batch_id} is in quarantine already: {record.validation.get('summary', '')}"
            )
        report = {
            "batch_id": batch_id,
            "success": False,
            "evicted": True,
            "previous_status": record.status.value,
            "previous_validation": record.validation,
            "reason": reason,
            "evicted_by": by,
            "evicted_at": _now(),
            "summary": f"batch {batch_id} evicted by {by}: {reason}",
        }
        return self.quarantine_batch(batch_id, report)

    # -- late labels --------------------------------------------------------------------------------------
    def land_labels(self, batch_id: str, labels: pd.DataFrame) -> str:
        """Write the late labels of a batch into ``labels/`` (what an upstream labelling job does).

        Raises:
            storage.StorageError: Labels of that batch already landed (labels are immutable too).
        """
        uri = storage.join(self.labels, f"{batch_id}.parquet")
        storage.write_bytes(uri, storage.parquet_bytes(labels), overwrite=False)
        return uri

    def register_labels(self) -> LabelsOutcome:
        """Attach every new file in ``labels/`` to its batch, after checking it fits the batch.

        An attached file moves to ``labels/attached/`` (copied, recorded, then removed), so ``labels/`` holds
        only what is new or waiting. A file for a batch not validated yet waits (it is looked at again next
        time). A file that cannot be used (unreadable, no target column, rows that do not match the batch, a
        quarantined batch, a batch that has labels already) moves to ``labels/rejected/`` beside a
        ``.error.txt`` naming the problem: never silently dropped.
        """
        outcome = LabelsOutcome()
        for uri in storage.list_files(self.labels, "*.parquet"):
            batch_id = storage.basename(uri).rsplit(".", 1)[0]
            record = self._find(batch_id)
            if record is None or record.status is BatchStatus.LANDED:
                outcome.waiting.append(batch_id)
                continue
            if record.labels is not None and record.labels["uri"] == uri:
                continue  # attached in place, before labels/attached/ existed
            data = storage.read_bytes(uri)
            if record.labels is not None and record.labels["sha256"] == storage.sha256_bytes(data):
                storage.delete(uri)  # a copy of the attached labels (or a crash left the inbox copy)
                continue
            try:
                if record.status is not BatchStatus.ACCEPTED:
                    raise CatalogError(f"batch {batch_id} is {record.status.value}: its labels cannot be used")
                if record.labels is not None:
                    raise CatalogError(f"batch {batch_id} already has labels from {record.labels['uri']}")
                batch = self.load([record], with_labels=False)
                filled = self._align_labels(batch, _read_frame(data, uri), batch_id).notna().sum()
            except CatalogError as error:
                self._reject_labels(uri, error)
                outcome.rejected.append((storage.basename(uri), str(error)))
                continue
            target = storage.join(self.labels, "attached", storage.basename(uri))
            storage.write_bytes(target, data, overwrite=False)
            labels = {
                "uri": target,
                "sha256": storage.sha256_bytes(data),
                "rows": len(batch),
                "labelled": int(filled),
                # To the microsecond: shadow mode counts late labels that arrived after a model trained, and a
                # time cut to the second could put labels of the same second before it (never counted).
                "registered_at": datetime.now(UTC).isoformat(),
            }

            def attach(current: BatchRecord, labels: dict[str, Any] = labels) -> BatchRecord | None:
                if current.labels is not None:
                    raise CatalogError(
                        f"batch {current.batch_id} got labels from {current.labels['uri']} meanwhile"
                    )
                return replace(current, labels=labels)

            try:
                outcome.registered.append(self._update(batch_id, attach))
            except CatalogError as error:
                log.warning("labels %s not attached: %s", uri, error)
                continue
            storage.delete(uri)
        return outcome

    def _reject_labels(self, uri: str, error: Exception) -> None:
        target = storage.join(self.labels, "rejected", storage.basename(uri))
        storage.write_bytes(f"{target}.error.txt", f"{error}\n".encode())
        storage.move(uri, target)

    def _align_labels(self, batch: pd.DataFrame, labels: pd.DataFrame, batch_id: str) -> pd.Series:
        """The late labels as a series aligned to the batch's rows (matched on ``schema.id``, else by position).

        Raises:
            CatalogError: The labels lack the target or id column, or do not match the batch's rows.
        """
        target, id_column = self.config.schema_.target, self.config.schema_.id
        if target not in labels.columns:
            raise CatalogError(f"labels of batch {batch_id} have no target column {target!r}")
        labels = labels.assign(**{target: self._label_values(labels[target], batch_id)})
        if id_column is None:
            if len(labels) != len(batch):
                raise CatalogError(
                    f"labels of batch {batch_id} have {len(labels)} rows, the batch {len(batch)}: without "
                    "schema.id, labels must list one row per batch row, in the batch's order"
                )
            return labels[target].set_axis(batch.index)
        if id_column not in labels.columns:
            raise CatalogError(f"labels of batch {batch_id} have no id column {id_column!r}")
        if labels[id_column].duplicated().any():
            raise CatalogError(f"labels of batch {batch_id} repeat ids in {id_column!r}")
        unknown = set(labels[id_column]) - set(batch[id_column])
        if unknown:
            raise CatalogError(f"labels of batch {batch_id}: {len(unknown)} id(s) are not in the batch")
        return batch[id_column].map(labels.set_index(id_column)[target])

    def _label_values(self, values: pd.Series, batch_id: str) -> pd.Series:
        """The target values of a label file as numbers, after checking training can use every one.

        Raises:
            CatalogError: A value is not a number, is infinite, or is not 0 or 1 for binary classification.
        """
        import numpy as np
        import pandas as pd

        from retrainer.config import Task

        target = self.config.schema_.target
        numbers = pd.to_numeric(values, errors="coerce") if not pd.api.types.is_bool_dtype(values) else values
        unreadable = values.notna() & numbers.isna()
        if unreadable.any():
            examples = ", ".join(map(repr, values[unreadable].astype(str).unique()[:3]))
            raise CatalogError(
                f"labels of batch {batch_id}: {int(unreadable.sum())} value(s) of {target!r} are not numbers "
                f"(e.g. {examples})"
            )
        numbers = numbers.astype("float64")
        if np.isinf(numbers).any():
            raise CatalogError(
                f"labels of batch {batch_id}: {int(np.isinf(numbers).sum())} value(s) of {target!r} are infinite"
            )
        if self.config.task is Task.BINARY_CLASSIFICATION:
            other = numbers.notna() & ~numbers.isin([0.0, 1.0])
            if other.any():
                raise CatalogError(
                    f"labels of batch {batch_id}: {int(other.sum())} value(s) of {target!r} are not 0 or 1 "
                    f"(e.g. {numbers[other].iloc[0]!r}): the task is binary classification"
                )
        return numbers

    def _late_labels(self, frame: pd.DataFrame, record: BatchRecord) -> pd.Series:
        """A batch's late labels aligned to its rows, after checking the file still has its recorded hash."""
        assert record.labels is not None
        uri = record.labels["uri"]
        data = storage.read_bytes(uri)
        if storage.sha256_bytes(data) != record.labels["sha256"]:
            raise CatalogError(f"labels of batch {record.batch_id} at {uri} changed since they were registered")
        return self._align_labels(frame, _read_frame(data, uri), record.batch_id)

    def late_labelled_rows(self, record: BatchRecord) -> pd.DataFrame:
        """The rows of a batch that had no target when they landed and have one from its late labels."""
        batch = self.load([record], with_labels=False)
        if record.labels is None:
            return batch.iloc[0:0]
        late = self._late_labels(batch, record)
        target = self.config.schema_.target
        rows = batch[batch[target].isna() & late.notna()].copy()
        rows[target] = late[rows.index]
        return rows.reset_index(drop=True)

    # -- training data ------------------------------------------------------------------------------------
    def window(self, cutoff: datetime, batches: int) -> list[BatchRecord]:
        """The newest ``batches`` accepted batches whose period ended by ``cutoff``, oldest first.

        Read newest first from the index: the cost is that of ``batches`` records, not of the history.
        """
        cutoff = _parse_ts(cutoff)
        self._ensure_index()
        chosen: list[BatchRecord] = []
        last_key = None
        # A page a little larger than the window: the ties of its oldest batch usually come with it.
        for key, batch_id in self._accepted_newest_first(cutoff, page=batches + 4):
            if len(chosen) >= batches and key != last_key:  # past the oldest one taken (and its ties)
                break
            record = self._find(batch_id)
            if record is None or record.status is not BatchStatus.ACCEPTED or record.period_end_ts > cutoff:
                continue
            chosen.append(record)
            last_key = key
        return sorted(chosen, key=lambda r: (r.period_end_ts, r.batch_id))[-batches:] if batches else []

    def accepted_after(self, after: datetime) -> list[BatchRecord]:
        """Accepted batches whose period ended after ``after``, oldest first.

        Read newest first from the index, stopping at ``after``: the cost is that of the batches returned.
        """
        after = _parse_ts(after)
        self._ensure_index()
        newer = []
        stop = f"{_newest_first(after):018d}"
        for key, batch_id in self._accepted_newest_first(datetime.max.replace(tzinfo=UTC)):
            if key >= stop:  # keys grow as period ends get older
                break
            record = self._find(batch_id)
            if record is not None and record.status is BatchStatus.ACCEPTED and record.period_end_ts > after:
                newer.append(record)
        return sorted(newer, key=lambda r: (r.period_end_ts, r.batch_id))

    def _accepted_newest_first(self, cutoff: datetime, page: int = 64) -> Iterator[tuple[str, str]]:
        """``(period key, batch id)`` of accepted batches ended by ``cutoff``, newest first, a page at a time."""
        folder = storage.join(self.records, "_accepted")
        after = f"{_newest_first(cutoff) - 1:018d}~"  # '~' sorts after '_': skips every later period
        while True:
            names = storage.list_names(folder, start_after=after, limit=page)
            for name in names:
                key, _, batch_id = name.partition("_")
                yield key, batch_id
            if len(names) < page:
                return
            after = names[-1]

    def load(
        self, records: list[BatchRecord], with_labels: bool = True, columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Read batches into one DataFrame, checking each file still has its recorded hash.

        Late labels (if any, also hash-checked) fill the batches' missing targets.

        Args:
            records: The batches, in the order their rows are wanted.
            with_labels: Fill missing targets from late labels.
            columns: Read only these columns (and the timestamp, target and id columns): a step holds in memory
                only what it uses. None: every column.

        Raises:
            CatalogError: A file changed since it landed, or there is nothing to read.
        """
        import pandas as pd

        if not records:
            raise CatalogError("no batches to load")
        schema = self.config.schema_
        if columns is not None:
            wanted = [*columns, schema.timestamp, schema.target, *([schema.id] if schema.id else [])]
            columns = [c for c in schema.columns if c in set(wanted)]  # the schema's order, each once
        frames = []
        for record in records:
            if not storage.exists(record.uri):
                raise CatalogError(f"batch {record.batch_id}: its file {record.uri} is missing")
            data = storage.read_bytes(record.uri)
            if storage.sha256_bytes(data) != record.sha256:
                raise CatalogError(
                    f"batch {record.batch_id} at {record.uri} changed since it landed "
                    f"(sha256 {storage.sha256_bytes(data)[:12]}…, recorded {record.sha256[:12]}…)"
                )
            frame = _read_frame(data, record.uri, columns)
            del data  # the file's bytes are not needed once parsed
            if with_labels and record.labels is not None:
                target = self.config.schema_.target
                frame[target] = frame[target].where(frame[target].notna(), self._late_labels(frame, record))
            frames.append(frame)
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        frames.clear()
        ts_col = self.config.schema_.timestamp
        frame[ts_col] = _to_utc(frame[ts_col], self.config.schema_.naive_timezone)
        return frame


def _encode(record: BatchRecord) -> bytes:
    return json.dumps(record.to_dict(), indent=2).encode()


def _read_frame(data: bytes, uri: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    import io

    import pandas as pd

    try:
        if columns is not None:  # a column the file lacks is the suite's business, not a read error
            import pyarrow.parquet as pq

            present = set(pq.read_schema(io.BytesIO(data)).names)
            columns = [c for c in columns if c in present]
        frame = pd.read_parquet(io.BytesIO(data), columns=None if columns is None else list(columns))
    except Exception as error:
        raise CatalogError(f"batch {uri} is not a readable Parquet file: {error}") from error
    if frame.empty:
        raise CatalogError(f"batch {uri} has no rows")
    return frame


def _to_utc(series: pd.Series, naive_timezone: str | None = None) -> pd.Series:
    """Timestamps in UTC; naive ones are read in ``naive_timezone`` (ingest refuses them without one)."""
    import pandas as pd

    if naive_timezone is not None and pd.api.types.is_datetime64_any_dtype(series) and series.dt.tz is None:
        series = series.dt.tz_localize(naive_timezone, ambiguous="NaT", nonexistent="NaT")
    return pd.to_datetime(series, utc=True, errors="coerce")
