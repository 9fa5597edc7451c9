"""The viewer tests use the sr_writer tests' phantom (one study with two lesions)."""

from tests.sr_writer.conftest import lesion_phantom, phantom_datasets

__all__ = ["lesion_phantom", "phantom_datasets"]
