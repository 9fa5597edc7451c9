"""The npm packages the interoperability and viewer tests use, installed when missing.

They live in the git-ignored ``.cache/node`` (the setup hook ``scripts/setup.d/20-node.sh``
puts them there; the tests run the hook themselves when something is missing).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.requirements import missing, require_executable

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_PREFIX = REPO_ROOT / ".cache" / "node"
OHIF_DIST = NODE_PREFIX / "ohif" / "dist"
DCMJS = NODE_PREFIX / "node_modules" / "dcmjs"
SETUP_HOOK = REPO_ROOT / "scripts" / "setup.d" / "20-node.sh"


def ensure_node_packages() -> None:
    """Install OHIF's dist and dcmjs with the setup hook if either is missing."""
    require_executable("node")
    require_executable("npm")
    if (OHIF_DIST / "index.html").is_file() and (DCMJS / "package.json").is_file():
        return
    result = subprocess.run(["bash", str(SETUP_HOOK)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not (OHIF_DIST / "index.html").is_file():
        missing(f"npm packages could not be installed: {result.stdout}{result.stderr}")
