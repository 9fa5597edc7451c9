"""What a site keeps about an analysis, and its progress: the shapes every part agrees on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = ["ANALYSIS_STATES", "Analysis", "AnalysisState", "Progress"]

#: ``pending``: waiting for the site's approval; ``refused``: the site said no; ``running``:
#: approved, jobs being selected and run; ``paused``: no new research job starts; ``cancelled``:
#: its pending jobs were dropped; ``done``: every selected job finished.
AnalysisState = Literal["pending", "refused", "running", "paused", "cancelled", "done"]
ANALYSIS_STATES: tuple[AnalysisState, ...] = get_args(AnalysisState)


@dataclass(frozen=True)
class Analysis:
    analysis_id: str  # the hub's id for it (32 lower-case hex digits)
    hub: str  # the hub that sent it, by its name at this site (auth.hubs[].name)
    bundle_sha256: str  # gateway.analysis.bundle: model.yaml and model.onnx together
    model_name: str  # as the bundle's model.yaml names it
    model_version: str
    cohort: dict[str, Any]  # the cohort language (gateway.federated.cohort.Cohort), as sent
    #: False (the default for federated analyses): results go to the research store and the
    #: index, not to the clinical PACS, until the site marks the model validated.
    validated: bool
    state: AnalysisState
    received_at: float  # epoch seconds
    #: The name under which this site's inference service serves the bundle, once installed
    #: (never the name of a model installed before: an installed model is never overwritten).
    installed_model: str | None = None


@dataclass(frozen=True)
class Progress:
    """Counts only: what the hub may see of an analysis at a site."""

    state: AnalysisState
    selected: int  # series selected for the model so far
    queued: int
    running: int
    done: int
    failed: int
