"""The store's observer outbox: an instance acknowledged is taken by every observer (the
findings index, the stability ledger, the forwarder) even when one of them fails at the commit
(its database away) or the process ends between the commit and the observers.

A real store and a real findings index; the index's database "away" is a gate in front of it
that raises what the index raises then (the real PostgreSQL outage: tests/pipeline/
test_database_lost.py); the process that ends is a real process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from gateway.database_wait import DatabaseDisconnected
from gateway.index import FindingsIndex, IndexSettings
from gateway.store import EmbeddedStore, IngestPolicy, StoredInstance
from sr_writer import build_sr
from tests.federated.synthetic import header_only, small_phantom
from tests.gateway.test_ingest_batch import received
from tests.sr_writer.builders import lesion_findings
from tests.support.dicom import part10_bytes


class IndexBehindItsDatabase:
    """The findings index as the store's observer, its database away while ``away``."""

    def __init__(self, index: FindingsIndex):
        self.index = index
        self.away = False
        self.calls = 0

    def __call__(self, stored: Sequence[StoredInstance]) -> None:
        self.calls += 1
        if self.away:
            raise DatabaseDisconnected("index.url: PostgreSQL does not answer (connection refused)")
        self.index.observe_instances([s.dataset for s in stored])


class Recorder:
    def __init__(self) -> None:
        self.received: list[StoredInstance] = []

    def __call__(self, stored: Sequence[StoredInstance]) -> None:
        self.received.extend(stored)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    opened = EmbeddedStore(tmp_path / "store", IngestPolicy())
    yield opened
    opened.close()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[FindingsIndex]:
    opened = FindingsIndex.open(IndexSettings(), tmp_path / "data")
    yield opened
    opened.close()


def _study_with_report(seed: int) -> list[Dataset]:
    """Four CT slices with one nodule and the SR that reports it."""
    phantom = small_phantom(seed, (12.0,))
    headers = header_only(phantom)
    return [*phantom.instances(), build_sr(lesion_findings(phantom, headers), headers)]


def _ingest(store: EmbeddedStore, datasets: list[Dataset]) -> None:
    batch = store.new_batch()
    for dataset in datasets:
        assert batch.add(received(store, dataset)).stored
    assert len(batch.commit()) == len(datasets)


def test_what_the_index_missed_while_its_database_was_away_is_indexed_when_it_is_back(
    store: EmbeddedStore, index: FindingsIndex
) -> None:
    gate, recorder = IndexBehindItsDatabase(index), Recorder()
    store.subscribe(gate)
    store.subscribe(recorder)
    datasets = _study_with_report(seed=41)
    gate.away = True
    _ingest(store, datasets)  # acknowledged: on disk and in the catalog
    assert index.counts()["studies"] == 0
    # The other observer was told all the same (with the queue away, a local index learns).
    assert len(recorder.received) == len(datasets)
    assert store.catalog.unobserved_count() == len(datasets)
    # Too new to take: the intake that committed them may be telling the observers right now.
    assert store.deliver_unobserved() == 0 and gate.calls == 1
    # Still away: tried, kept.
    assert store.deliver_unobserved(settle_seconds=0) == 0
    assert gate.calls == 2 and store.catalog.unobserved_count() == len(datasets)
    recorder.received.clear()
    gate.away = False
    assert store.deliver_unobserved(settle_seconds=0) == len(datasets)  # to every observer
    # The SR was read whole from its stored file: its findings and measurements are indexed.
    assert index.counts() == {
        "studies": 1,
        "series": 2,
        "reports": 1,
        "findings": 1,
        "measurements": 2,
    }
    assert sorted(s.record.sop_instance_uid for s in recorder.received) == sorted(
        d.SOPInstanceUID for d in datasets
    )
    assert store.catalog.unobserved_count() == 0
    assert store.deliver_unobserved(settle_seconds=0) == 0  # nothing twice


def test_observers_that_take_a_commit_leave_nothing_to_deliver_again(
    store: EmbeddedStore, index: FindingsIndex
) -> None:
    gate = IndexBehindItsDatabase(index)
    store.subscribe(gate)
    _ingest(store, _study_with_report(seed=42))
    assert index.counts()["reports"] == 1
    assert store.catalog.unobserved_count() == 0
    assert store.deliver_unobserved(settle_seconds=0) == 0 and gate.calls == 1


def test_a_deleted_study_and_a_lost_file_leave_the_outbox(
    store: EmbeddedStore, index: FindingsIndex
) -> None:
    gate, recorder = IndexBehindItsDatabase(index), Recorder()
    store.subscribe(gate)
    store.subscribe(recorder)
    gate.away = True
    deleted, kept = _study_with_report(seed=43), _study_with_report(seed=44)
    _ingest(store, deleted)
    _ingest(store, kept)
    assert store.delete_study(deleted[0].StudyInstanceUID)
    lost = store.catalog.find_instance(kept[0].SOPInstanceUID)
    assert lost is not None
    store.path_of(lost.path).unlink()  # `fedgate store check` reports it as missing
    assert store.catalog.unobserved_count() == len(kept)
    recorder.received.clear()
    gate.away = False
    assert store.deliver_unobserved(settle_seconds=0) == len(kept) - 1
    assert {s.record.sop_instance_uid for s in recorder.received} == {
        d.SOPInstanceUID for d in kept[1:]
    }
    assert store.catalog.unobserved_count() == 0


_ENDS_AFTER_THE_COMMIT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from gateway.store import EmbeddedStore, IngestPolicy

    store = EmbeddedStore(Path(sys.argv[1]), IngestPolicy())
    store.subscribe(lambda stored: os._exit(137))  # killed as its observers begin
    batch = store.new_batch()
    for name in sys.argv[2:]:
        path, handle = store.layout.new_temporary()
        with handle:
            handle.write(Path(name).read_bytes())
        assert batch.add(path).stored
    batch.commit()
    """
)


def test_a_process_that_ends_between_the_commit_and_its_observers(
    tmp_path: Path, index: FindingsIndex
) -> None:
    datasets = _study_with_report(seed=45)
    files = []
    for number, dataset in enumerate(datasets):
        files.append(tmp_path / f"{number}.dcm")
        files[-1].write_bytes(part10_bytes(dataset))
    ended = subprocess.run(
        [sys.executable, "-c", _ENDS_AFTER_THE_COMMIT, str(tmp_path / "store"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ended.returncode == 137, ended.stderr
    # The next start: the instances are in the store, and its observers are told now.
    store = EmbeddedStore(tmp_path / "store", IngestPolicy())
    try:
        assert store.catalog.counts()["instances"] == len(datasets)
        store.subscribe(IndexBehindItsDatabase(index))
        assert store.deliver_unobserved(settle_seconds=0) == len(datasets)
        assert index.counts()["findings"] == 1
    finally:
        store.close()
