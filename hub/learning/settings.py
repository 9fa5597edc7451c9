"""``learning:`` in hub.yaml: the hub's Flower SuperLink (``fedgate learn run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LearningSettings", "TlsSettings"]


class TlsSettings(BaseModel):
    """The SuperLink's certificate, key and the CA that signed it (PEM files)."""

    model_config = ConfigDict(extra="forbid")
    certfile: Path
    keyfile: Path
    ca_certfile: Path


class LearningSettings(BaseModel):
    """``learning:`` in hub.yaml: where the hub's SuperLink listens and what it keeps."""

    model_config = ConfigDict(extra="forbid")
    #: HOST:PORT of a SuperLink that runs already; None: ``fedgate learn run`` starts one.
    superlink: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=9091, ge=1, le=65535)
    #: The SuperLink's state (its database, Flower's home folder with the installed FAB).
    state_dir: Path = Path("./fedgate-hub-learning")
    #: How long each step waits for the sites' answers (a site silent longer is absent).
    round_timeout_seconds: float = Field(default=120.0, gt=0)
    #: TLS for the SuperLink's APIs; None: plain HTTP, for loopback only.
    tls: TlsSettings | None = None
    #: SuperNode authentication (``--enable-supernode-auth``): only SuperNodes whose public
    #: keys were registered (``flwr supernode register``) may connect.
    supernode_auth: bool = False
    #: Where the SuperLink keeps its state (runs, messages, registered SuperNodes): ``memory``
    #: (a round took half the time: Flower's SQLite file was the slowest part of a round,
    #: docs/benchmarks.md) or ``file`` (``superlink.db`` in ``state_dir``: it survives a
    #: restart). None: ``file`` with ``supernode_auth`` (the registrations must survive a
    #: restart of the SuperLink), else ``memory``.
    superlink_state: Literal["memory", "file"] | None = None

    @property
    def superlink_state_in_memory(self) -> bool:
        """Whether the SuperLink keeps its state in memory (``superlink_state``'s rule)."""
        if self.superlink_state is None:
            return not self.supernode_auth
        return self.superlink_state == "memory"
