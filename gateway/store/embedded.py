"""The embedded store: the files, their catalog, and who wants to hear about new instances."""

from __future__ import annotations

from pathlib import Path

from gateway.store.catalog import Catalog
from gateway.store.files import FileLayout
from gateway.store.ingest import IngestBatch, IngestPolicy, Observer


class EmbeddedStore:
    """``data_dir/store``: Part 10 files plus ``catalog.sqlite``."""

    def __init__(self, root: Path, policy: IngestPolicy):
        self.layout = FileLayout(root)
        self.layout.prepare()
        self.catalog = Catalog.open(root / "catalog.sqlite")
        self.policy = policy
        self.observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer`` with every committed group of newly stored instances."""
        self.observers.append(observer)

    def new_batch(self, expected_study_uid: str | None = None) -> IngestBatch:
        return IngestBatch(
            layout=self.layout,
            catalog=self.catalog,
            policy=self.policy,
            observers=self.observers,
            expected_study_uid=expected_study_uid,
        )

    def path_of(self, relative_path: str) -> Path:
        return self.layout.absolute(relative_path)

    def close(self) -> None:
        self.catalog.close()
