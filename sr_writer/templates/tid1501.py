"""TID 1501 Measurement and Qualitative Evaluation Group, and what all groups share.

PS3.16 TID 1501: a group with a tracking identifier (TID 4108), finding type, algorithm
identification (TID 4019), finding site, measurements (TID 300) and qualitative evaluations,
not tied to an image region. It carries the image- or study-level findings and the study-level
"no finding" result.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd

from sr_writer.codes import NO_ABNORMALITY, PERCENT
from sr_writer.findings import PROBABILITY, AlgorithmIdentification, CodedConcept, Finding


def coded(concept: CodedConcept) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(
        value=concept.value,
        scheme_designator=concept.scheme_designator,
        meaning=concept.meaning,
        scheme_version=concept.scheme_version,
    )


def algorithm_identification(algorithm: AlgorithmIdentification) -> hd.sr.AlgorithmIdentification:
    """TID 4019: written into every group, so each finding names the model that made it."""
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=list(algorithm.parameters) or None,
        manufacturer=algorithm.manufacturer,
    )


@dataclass(frozen=True)
class GroupContent:
    """The highdicom arguments that TID 1501, 1410 and 1411 share, built from one finding."""

    tracking_identifier: hd.sr.TrackingIdentifier
    finding_type: hd.sr.CodedConcept | None
    finding_category: hd.sr.CodedConcept | None
    algorithm_id: hd.sr.AlgorithmIdentification
    finding_sites: list[hd.sr.FindingSite] | None
    measurements: list[hd.sr.Measurement] | None
    qualitative_evaluations: list[hd.sr.QualitativeEvaluation] | None

    @classmethod
    def of(
        cls, finding: Finding, algorithm: hd.sr.AlgorithmIdentification, tracking_uid: str
    ) -> GroupContent:
        measurements = [
            hd.sr.Measurement(
                name=coded(m.name),
                value=m.value,
                unit=coded(m.unit),
                method=coded(m.method) if m.method else None,
                derivation=coded(m.derivation) if m.derivation else None,
            )
            for m in finding.measurements
        ]
        if finding.probability is not None:
            measurements.append(
                hd.sr.Measurement(
                    name=coded(PROBABILITY),
                    value=finding.probability * 100.0,
                    unit=coded(PERCENT),
                )
            )
        evaluations = [
            hd.sr.QualitativeEvaluation(name=coded(e.name), value=coded(e.value))
            for e in finding.qualitative_evaluations
        ]
        sites = None
        if finding.finding_site is not None:
            laterality = coded(finding.laterality) if finding.laterality else None
            sites = [hd.sr.FindingSite(coded(finding.finding_site), laterality=laterality)]
        return cls(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=tracking_uid, identifier=finding.tracking_identifier
            ),
            finding_type=coded(finding.finding_type) if finding.finding_type else None,
            finding_category=coded(finding.finding_category) if finding.finding_category else None,
            algorithm_id=algorithm,
            finding_sites=sites,
            measurements=measurements or None,
            qualitative_evaluations=evaluations or None,
        )

    def arguments(self) -> dict[str, object]:
        return {
            "tracking_identifier": self.tracking_identifier,
            "finding_type": self.finding_type,
            "finding_category": self.finding_category,
            "algorithm_id": self.algorithm_id,
            "finding_sites": self.finding_sites,
            "measurements": self.measurements,
            "qualitative_evaluations": self.qualitative_evaluations,
        }


def measurement_group(content: GroupContent) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 for a finding without a region."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(**content.arguments())  # type: ignore[arg-type]


# The tracking identifier of the "no finding" group: a human-readable label in viewers.
NO_FINDING_TRACKING_IDENTIFIER = "No finding"


def no_finding_group(
    algorithm: hd.sr.AlgorithmIdentification, tracking_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The study-level negative result: Finding (DCM 121071) = No abnormality (DCM 111286).

    TID 1500 needs at least one group under Imaging Measurements, and a negative result must
    still name the algorithm (TID 4019) that looked: so it is a TID 1501 group whose finding is
    "No abnormality", with no region and no measurement. The reader maps it back to an empty
    findings list.
    """
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=NO_FINDING_TRACKING_IDENTIFIER
        ),
        algorithm_id=algorithm,
        finding_type=coded(NO_ABNORMALITY),
    )
