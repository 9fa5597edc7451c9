"""TID 1600 Image Library, lean: the images the regions are drawn on, grouped by modality and
frame of reference (TID 1602 descriptors shared at group level), without per-image descriptors.

highdicom's ``ImageLibrary`` writes some fifteen TID 1602 descriptors (position, orientation,
spacing, ...) for every image: with 100 findings on 100 slices that is 1,600 NUM items, and it
made building the SR take about twice as long (see docs/benchmarks.md). The per-image
descriptors are optional (TID 1601 row 2, "U") and every viewer we test locates an image by its
SOP Instance UID, so this library keeps only what identifies the images.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

# TID 1601 row 1: the image entry's concept name, "Source" (SCT 260753009), worded as highdicom
# and PS3.16 word it (pydicom's dictionary has the SNOMED FSN "Source (attribute)").
SOURCE = hd.sr.CodedConcept(codes.SCT.Source.value, "SCT", "Source")


def _modality_meanings() -> dict[str, str]:
    """CID 29 "Acquisition Modality": modality value -> code meaning (e.g. CT -> Computed ...)."""
    collection = codes.cid29
    meanings = {}
    for keyword in dir(collection):
        code = getattr(collection, keyword, None) if keyword[:1].isupper() else None
        if code is not None and hasattr(code, "meaning"):
            meanings[str(code.value)] = str(code.meaning)
    return meanings


MODALITY_MEANINGS = _modality_meanings()


def image_library(images: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    """The "Image Library" container (TID 1600) for ``images`` (at least one)."""
    groups: dict[tuple[str, str | None], list[Dataset]] = {}
    for image in images:
        key = (str(image.Modality), str(image.get("FrameOfReferenceUID") or "") or None)
        groups.setdefault(key, []).append(image)
    library = hd.sr.ContainerContentItem(
        name=codes.DCM.ImageLibrary, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    library.ContentSequence = hd.sr.ContentSequence()
    for (modality, frame_of_reference), members in groups.items():
        group = hd.sr.ContainerContentItem(
            name=codes.DCM.ImageLibraryGroup,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        group.ContentSequence = hd.sr.ContentSequence()
        group.ContentSequence.append(
            hd.sr.CodeContentItem(
                name=codes.DCM.Modality,
                value=hd.sr.CodedConcept(
                    modality, "DCM", MODALITY_MEANINGS.get(modality, modality)
                ),
                relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT,
            )
        )
        if frame_of_reference is not None:
            group.ContentSequence.append(
                hd.sr.UIDRefContentItem(
                    name=codes.DCM.FrameOfReferenceUID,
                    value=frame_of_reference,
                    relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT,
                )
            )
        for image in members:
            group.ContentSequence.append(
                hd.sr.ImageContentItem(
                    name=SOURCE,
                    referenced_sop_class_uid=str(image.SOPClassUID),
                    referenced_sop_instance_uid=str(image.SOPInstanceUID),
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            )
        library.ContentSequence.append(group)
    return library
