"""Where a node keeps its state, and the typed settings shared by the parts."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

HOME_ENV = "P2PINFER_HOME"


def resolve_home(home: Path | None) -> Path:
    """The node's home directory: `--home`, else `$P2PINFER_HOME`, else the platform data dir."""
    if home is not None:
        return home.expanduser()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("p2pinfer"))
