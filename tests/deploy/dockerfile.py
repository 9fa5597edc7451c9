"""The stages of deploy/container/Dockerfile, read with dockerfile-parse (Red Hat's parser)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser


@dataclass
class Stage:
    name: str
    #: What the stage is built FROM: another stage's name, or an image reference.
    parent: str
    instructions: list[dict[str, Any]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [each["value"] for each in self.instructions if each["instruction"] == instruction]

    @property
    def env(self) -> dict[str, str]:
        variables = {}
        for value in self.all("ENV"):
            for pair in shlex.split(value):
                name, _, setting = pair.partition("=")
                variables[name] = setting
        return variables


def stages(path: Path) -> dict[str, Stage]:
    """Every named stage, in order, with its instructions (line continuations joined)."""
    parser = DockerfileParser(path=str(path))
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            words = instruction["value"].split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: {words}"
            current = Stage(name=words[2], parent=words[0])
            found[current.name] = current
        elif current is not None:
            current.instructions.append(instruction)
    return found


def global_args(path: Path) -> dict[str, str]:
    """ARGs before the first FROM (usable in FROM lines)."""
    parser = DockerfileParser(path=str(path))
    args = {}
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            break
        if instruction["instruction"] == "ARG":
            name, _, default = instruction["value"].partition("=")
            args[name] = default
    return args
