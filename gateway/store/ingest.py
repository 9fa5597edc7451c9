"""Accepting received files into the embedded store: check, publish atomically, catalogue.

The STOW-RS endpoint (and later the DIMSE and polling intakes) hands each received part, as a
temporary file, to an :class:`IngestBatch`. The batch checks it, renames it into place and
records it; :meth:`IngestBatch.commit` makes the renames and the catalog rows durable. Only
after the commit may the sender be told "stored" (DESIGN.md, principle 1).

Failure reasons are those of PS3.18 Table 10.5.3-2 (and PS3.4 Annex B for 0x0122), and
dcm4chee-arc's 0xA778/0xA779 for an instance whose patient contradicts its study's
(:mod:`gateway.store.patients`).
"""

from __future__ import annotations

import enum
import filecmp
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import structlog
from pydicom.dataset import Dataset

from gateway.database_wait import DatabaseDisconnected
from gateway.store.catalog import Catalog, CatalogWriter, InstanceRecord, integer_or_none
from gateway.store.files import FileLayout, fsync_directory, publish
from gateway.store.instance_json import ROOT_MARK, instance_url, metadata_json
from gateway.store.part10 import (
    IDENTITY_KEYWORDS,
    MEDIA_STORAGE_KEYWORDS,
    ParsedInstance,
    UnreadableInstanceError,
    read_header,
    rewrite_as_part10,
    text_or_none,
)
from gateway.store.patients import PatientConflict, PatientIdentity
from gateway.store.uids import is_valid_uid

log = structlog.get_logger(__name__)


class FailureReason(enum.IntEnum):
    """STOW-RS Failure Reason (0008,1197) values, PS3.18 10.5.3."""

    PROCESSING_FAILURE = 0x0110
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    # The patient of the instance contradicts its held study's (dcm4chee-arc's codes).
    PATIENT_ID_CONFLICT = PatientConflict.PATIENT_ID.value
    PATIENT_ATTRIBUTES_CONFLICT = PatientConflict.PATIENT_ATTRIBUTES.value


class WarningReason(enum.IntEnum):
    """STOW-RS Warning Reason (0008,1196) values, PS3.18 10.5.3."""

    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006


@dataclass
class IngestOutcome:
    """What happened to one received instance."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    failure: FailureReason | None = None
    warning: WarningReason | None = None
    comment: str = ""

    @property
    def stored(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class StoredInstance:
    """Handed to the store's observers (findings index, forwarder) after a commit."""

    record: InstanceRecord
    dataset: Dataset  # the header, bulk data deferred


Observer = Callable[[Sequence[StoredInstance]], None]


def tell_observers(
    observers: Sequence[Observer], stored: Sequence[StoredInstance], catalog: Catalog
) -> bool:
    """Hand ``stored`` (committed, in the observer outbox) to every observer; once all took
    it, out of the outbox. False if one failed (or the outbox could not be cleared): the
    instances stay in the outbox and are delivered again, to every observer (they take
    repeats), by :meth:`gateway.store.embedded.EmbeddedStore.deliver_unobserved`; the intake
    that stored them is not failed, they are safe on disk and in the catalog. The others are
    still told now: with the queue's PostgreSQL away, a SQLite findings index learns the study
    at once."""
    failed = False
    for observer in observers:
        try:
            observer(stored)
        except Exception as error:  # a database away, an observer's bug
            failed = True
            log.error(
                "store.observer_failed",
                observer=repr(observer),
                instances=len(stored),
                error=f"{type(error).__name__}: {error}",
                hint="kept in the observer outbox, delivered again",
                exc_info=not isinstance(error, DatabaseDisconnected),
            )
    if failed:
        return False
    try:
        catalog.observers_done([s.record.sop_instance_uid for s in stored])
    except sqlite3.Error as error:  # delivered again later: the observers take repeats
        log.warning("store.observer_outbox_not_cleared", error=str(error))
        return False
    return True


@dataclass
class IngestPolicy:
    duplicates: str = "replace"  # "replace" or "keep"
    #: An instance contradicting the patient of its held study: "reject" or "accept" (it is
    #: stored, the study keeps its patient; see :mod:`gateway.store.patients`).
    patient_mismatch: str = "reject"
    sop_classes: frozenset[str] = frozenset()  # empty: all
    forward_to_pacs: bool = False


@dataclass
class IngestBatch:
    """The instances of one request.

    :meth:`add` may be called from several threads at once; :meth:`commit` only when no
    :meth:`add` is running.
    """

    layout: FileLayout
    catalog: Catalog
    policy: IngestPolicy
    observers: Sequence[Observer] = ()
    expected_study_uid: str | None = None
    _pending: list[tuple[Dataset, InstanceRecord, IngestOutcome]] = field(default_factory=list)
    _directories: set[Path] = field(default_factory=set)
    _replaced_files: list[Path] = field(default_factory=list)
    _seen: dict[str, Path] = field(default_factory=dict)
    # The patient of each held study this batch has touched, None for a study not held (one
    # catalog read per study, not per instance).
    _patients: dict[str, PatientIdentity | None] = field(default_factory=dict)
    # The position of each pending instance in the request (id of its outcome -> position):
    # parts are checked in parallel, and the first part of a new study, not the first
    # checked, gives the study its patient.
    _positions: dict[int, int] = field(default_factory=dict)
    # Each pending instance's WADO-RS metadata, built from its parsed header (id of its
    # outcome -> the DICOM JSON; None if it could not be built in memory).
    _metadata: dict[int, bytes | None] = field(default_factory=dict)
    # add() may run in several threads at once (their fsyncs overlap); commit() may not.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, temporary: Path | None, reason: FailureReason, comment: str) -> IngestOutcome:
        """Record a part that failed before it could be read (e.g. too large)."""
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        return IngestOutcome(None, None, failure=reason, comment=comment)

    def add(
        self,
        temporary: Path,
        handle: BinaryIO | None = None,
        head: bytes | None = None,
        parsed: ParsedInstance | None = None,
        position: int = 0,
    ) -> IngestOutcome:
        """Check ``temporary`` (a complete part) and move it into the store.

        ``handle``, if given, is the still-open file the part was written through: its data
        is made durable through it (one open fewer per instance on the hot path) and it is
        closed here. ``head``, if given, is the file's first bytes, from which the header is
        parsed without reading the file again (:func:`read_header`); ``parsed``, if given,
        is that header already parsed (:func:`header_from_head`).
        """
        try:
            if handle is not None:
                with handle:
                    handle.flush()
                    os.fdatasync(handle.fileno())
            return self._add(
                temporary, synced=handle is not None, head=head, parsed=parsed, position=position
            )
        except OSError as error:
            log.error("store.write_failed", error=str(error))
            return IngestOutcome(
                None, None, failure=FailureReason.PROCESSING_FAILURE, comment="storage failure"
            )
        finally:
            temporary.unlink(missing_ok=True)

    def _add(
        self,
        temporary: Path,
        synced: bool,
        head: bytes | None,
        parsed: ParsedInstance | None,
        position: int,
    ) -> IngestOutcome:
        try:
            if parsed is None:
                parsed = read_header(temporary, head)
        except UnreadableInstanceError as error:
            known = error.dataset if error.dataset is not None else Dataset()
            return IngestOutcome(
                sop_class_uid=_uid_or_none(known, "SOPClassUID"),
                sop_instance_uid=_uid_or_none(known, "SOPInstanceUID"),
                failure=FailureReason.CANNOT_UNDERSTAND,
                comment=str(error),
            )
        dataset = parsed.dataset
        uids = parsed.identity
        valid = {
            keyword: text
            for keyword in IDENTITY_KEYWORDS
            if (text := uids[keyword]) and is_valid_uid(text)
        }
        outcome = IngestOutcome(
            sop_class_uid=valid.get("SOPClassUID"),
            sop_instance_uid=valid.get("SOPInstanceUID"),
            study_instance_uid=valid.get("StudyInstanceUID"),
            series_instance_uid=valid.get("SeriesInstanceUID"),
        )
        problem = self._check(uids, valid)
        if problem is not None:
            outcome.failure, outcome.comment = problem
            return outcome
        assert outcome.sop_instance_uid and outcome.sop_class_uid
        assert outcome.study_instance_uid and outcome.series_instance_uid
        conflict = self._patient_conflict(outcome.study_instance_uid, dataset)
        if conflict is not None:
            outcome.failure, outcome.comment = conflict
            return outcome
        final = self.layout.instance_path(
            outcome.study_instance_uid, outcome.series_instance_uid, outcome.sop_instance_uid
        )
        with self._lock:
            existing = self._seen.get(outcome.sop_instance_uid)
        if existing is None:
            catalogued = self.catalog.find_instance(outcome.sop_instance_uid)
            existing = self.layout.absolute(catalogued.path) if catalogued else None
        if existing is not None and existing.exists():
            if _same_content(temporary, existing, parsed):
                return outcome  # an identical resend: nothing to do, nothing to warn about
            if self.policy.duplicates == "keep":
                outcome.warning = WarningReason.ELEMENTS_DISCARDED
                outcome.comment = "duplicate SOP Instance UID: kept the stored copy"
                return outcome
            outcome.warning = WarningReason.COERCION_OF_DATA_ELEMENTS
            outcome.comment = "duplicate SOP Instance UID: replaced the stored copy"
            if existing != final:
                with self._lock:
                    self._replaced_files.append(existing)
        metadata = _metadata(dataset, parsed.transfer_syntax_uid, outcome)
        source = temporary
        if parsed.needs_part10_rewrite:
            source = temporary.with_suffix(".p10")
            rewrite_as_part10(temporary, parsed, source)
        elif not synced:
            with open(temporary, "rb+") as handle:
                os.fdatasync(handle.fileno())
        publish(source, final)
        record = InstanceRecord(
            study_instance_uid=outcome.study_instance_uid,
            series_instance_uid=outcome.series_instance_uid,
            sop_instance_uid=outcome.sop_instance_uid,
            sop_class_uid=outcome.sop_class_uid,
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            path=self.layout.relative(final),
            size=final.stat().st_size if source is not temporary else parsed.size,
        )
        with self._lock:
            # Seen and pending together: a later copy of this SOP Instance UID in the same
            # request that finds this one in _seen is then pending after it, so the catalog
            # keeps the later copy, not this one, whose file that copy removes as stale.
            self._directories.add(final.parent)
            self._seen[outcome.sop_instance_uid] = final
            self._pending.append((dataset, record, outcome))
            self._positions[id(outcome)] = position
            self._metadata[id(outcome)] = metadata
        return outcome

    def _check(
        self, uids: dict[str, str | None], valid: dict[str, str]
    ) -> tuple[FailureReason, str] | None:
        for keyword in IDENTITY_KEYWORDS:
            if uids[keyword] is None:
                return FailureReason.CANNOT_UNDERSTAND, f"{keyword} is missing"
            if keyword not in valid:
                return FailureReason.CANNOT_UNDERSTAND, f"{keyword} is not a valid UID"
        for meta_keyword, keyword in zip(MEDIA_STORAGE_KEYWORDS, IDENTITY_KEYWORDS, strict=False):
            meta_value = uids[meta_keyword]
            if meta_value and meta_value != uids[keyword]:
                return (
                    FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                    f"{meta_keyword} in the file meta differs from {keyword}",
                )
        if self.expected_study_uid and valid["StudyInstanceUID"] != self.expected_study_uid:
            return (
                FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                "StudyInstanceUID differs from the study in the request URL",
            )
        if self.policy.sop_classes and valid["SOPClassUID"] not in self.policy.sop_classes:
            return FailureReason.SOP_CLASS_NOT_SUPPORTED, "SOP Class not accepted by this gateway"
        return None

    def _patient_conflict(
        self, study_uid: str, dataset: Dataset
    ) -> tuple[FailureReason, str] | None:
        """A contradiction of the held study's patient, unless the policy accepts it.

        Instances of a study not yet held are judged among themselves at the commit
        (:meth:`_recheck_patients`), where the order of the parts is known.
        """
        with self._lock:
            known = study_uid in self._patients
            held = self._patients.get(study_uid)
        if not known:
            held = self.catalog.study_patient(study_uid)
            with self._lock:
                self._patients[study_uid] = held
        if held is None:
            return None
        return self._judge(study_uid, held, PatientIdentity.of(dataset), dataset)

    def _judge(
        self, study_uid: str, held: PatientIdentity, received: PatientIdentity, dataset: Dataset
    ) -> tuple[FailureReason, str] | None:
        conflict = held.conflict(received)
        if conflict is None:
            return None
        reason, words = conflict
        if self.policy.patient_mismatch == "accept":
            log.warning(
                "store.patient_mismatch_accepted",
                study=study_uid,
                sop_instance_uid=_uid_or_none(dataset, "SOPInstanceUID"),
                conflict=words,
            )
            return None
        log.warning(
            "store.patient_mismatch_refused",
            study=study_uid,
            sop_instance_uid=_uid_or_none(dataset, "SOPInstanceUID"),
            reason=f"0x{reason:04X}",
            conflict=words,
        )
        return FailureReason(reason), words

    def _recheck_patients(self, writer: CatalogWriter) -> None:
        """Judge the pending instances against their studies as the commit sees them.

        Here the instances of a new study meet: the first of them in the request's order
        gives the study its patient. So do two requests adding to one new study at once
        (each passed :meth:`_add` unseen by the other): the catalog's write transaction
        orders them. An instance refused here fails like any other commit failure: its file
        is removed.
        """
        if self.policy.patient_mismatch == "accept":
            return
        patients: dict[str, PatientIdentity] = {}
        refused: set[int] = set()
        in_order = sorted(self._pending, key=lambda item: self._positions.get(id(item[2]), 0))
        for dataset, record, outcome in in_order:
            study_uid = record.study_instance_uid
            received = PatientIdentity.of(dataset)
            if study_uid not in patients:
                patients[study_uid] = writer.study_patient(study_uid) or received
            problem = self._judge(study_uid, patients[study_uid], received, dataset)
            if problem is None:
                continue
            refused.add(id(outcome))
            outcome.failure, outcome.comment = problem
            outcome.warning = None
            self.layout.absolute(record.path).unlink(missing_ok=True)
            catalogued = self.catalog.find_instance(record.sop_instance_uid)
            if catalogued is not None:  # the copy it would have replaced stays
                stale = self.layout.absolute(catalogued.path)
                self._replaced_files = [p for p in self._replaced_files if p != stale]
        self._pending[:] = [item for item in self._pending if id(item[2]) not in refused]

    def commit(self) -> list[StoredInstance]:
        """Make everything added so far durable and catalogued; tell the observers.

        If that fails (disk full, database error), the instances of this group become
        failures (0x0110): they are not acknowledged, and their new files are removed.
        """
        if not self._pending:
            return []
        try:
            for directory in self._directories:
                fsync_directory(directory)
            with self.catalog.transaction() as writer:
                self._recheck_patients(writer)
                writer.add_instances([(dataset, record) for dataset, record, _ in self._pending])
                writer.keep_instance_metadata(
                    [
                        (record.sop_instance_uid, self._metadata.get(id(outcome)))
                        for _, record, outcome in self._pending
                    ]
                )
                if self.policy.forward_to_pacs:
                    for _, record, _ in self._pending:
                        writer.enqueue_forward(record)
                if self.observers:
                    writer.await_observers([r.sop_instance_uid for _, r, _ in self._pending])
        except (OSError, sqlite3.Error) as error:
            log.error("store.commit_failed", error=str(error), instances=len(self._pending))
            for _, record, outcome in self._pending:
                outcome.failure = FailureReason.PROCESSING_FAILURE
                outcome.warning = None
                outcome.comment = "storage failure"
                self.layout.absolute(record.path).unlink(missing_ok=True)
            self._pending.clear()
            self._positions.clear()
            self._metadata.clear()
            return []
        for stale in self._replaced_files:
            stale.unlink(missing_ok=True)
        stored = [StoredInstance(record, dataset) for dataset, record, _ in self._pending]
        self._pending.clear()
        self._positions.clear()
        self._metadata.clear()
        self._directories.clear()
        self._replaced_files.clear()
        if self.observers:
            tell_observers(self.observers, stored, self.catalog)
        return stored

    @property
    def pending(self) -> int:
        return len(self._pending)


def _metadata(dataset: Dataset, transfer_syntax_uid: str, outcome: IngestOutcome) -> bytes | None:
    """The instance's WADO-RS metadata from its parsed header (the DICOMweb root marked), or
    None where the header in memory does not hold it (then its file is read when asked)."""
    assert outcome.study_instance_uid and outcome.series_instance_uid
    assert outcome.sop_instance_uid
    url = instance_url(
        ROOT_MARK,
        outcome.study_instance_uid,
        outcome.series_instance_uid,
        outcome.sop_instance_uid,
    )
    try:
        return metadata_json(
            dataset,
            transfer_syntax_uid,
            url,
            lambda: integer_or_none(dataset, "NumberOfFrames") is not None or "Rows" in dataset,
        )
    except Exception:  # never fail an intake for what a request can still build from the file
        log.exception("store.metadata_not_built", sop_instance_uid=outcome.sop_instance_uid)
        return None


def _uid_or_none(dataset: Dataset, keyword: str) -> str | None:
    text = text_or_none(dataset, keyword)
    return text if text is not None and is_valid_uid(text) else None


def _same_content(received: Path, stored: Path, parsed: ParsedInstance) -> bool:
    if parsed.needs_part10_rewrite:
        return False  # different bytes by construction; treat as a new copy
    if received.stat().st_size != stored.stat().st_size:
        return False
    return filecmp.cmp(received, stored, shallow=False)
