"""The embedded store: the files, their catalog, and who wants to hear about new instances."""

from __future__ import annotations

import shutil
from dataclasses import replace
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

    def new_batch(
        self, expected_study_uid: str | None = None, forward_to_pacs: bool | None = None
    ) -> IngestBatch:
        """A batch for one request; ``forward_to_pacs`` overrides the store's policy."""
        policy = self.policy
        if forward_to_pacs is not None and forward_to_pacs != policy.forward_to_pacs:
            policy = replace(policy, forward_to_pacs=forward_to_pacs)
        return IngestBatch(
            layout=self.layout,
            catalog=self.catalog,
            policy=policy,
            observers=self.observers,
            expected_study_uid=expected_study_uid,
        )

    def delete_study(self, study_instance_uid: str) -> bool:
        """Remove a study's files and rows, unless some of it still waits to be forwarded."""
        with self.catalog.transaction() as writer:
            if not writer.delete_study(study_instance_uid):
                return False
        shutil.rmtree(self.layout.instances / study_instance_uid, ignore_errors=True)
        return True

    def path_of(self, relative_path: str) -> Path:
        return self.layout.absolute(relative_path)

    def close(self) -> None:
        self.layout.close()
        self.catalog.close()
