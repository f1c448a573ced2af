"""What each workaround in `p2pinfer.net.compat` was written against: the libp2p version
and a digest of the source of every libp2p function it replaces or relies on.

The guard tests (tests/unit/net/compat/) compare these with the installed libp2p, so an
upgrade that touches a patched function fails there, loudly, instead of silently
undoing (or breaking) a workaround. After an upgrade: read the new upstream code, drop
the workaround if upstream fixed the defect, else re-check it and update the digest.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from importlib.metadata import version
from typing import Any

LIBP2P_VERSION = "0.8.1"
"""The py-libp2p release every workaround here was written for (pinned in pyproject.toml)."""


def resolve(target: str) -> Any:
    """The object named `module:attr.attr` (`libp2p.pubsub.gossipsub:GossipSub.mesh_heartbeat`)."""
    module_name, _, path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def source_digest(obj: Any) -> str:
    """sha256 of `obj`'s source text, the first 16 hex digits."""
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def installed_libp2p() -> str:
    """The installed py-libp2p version."""
    return version("libp2p")


_PATCHED_IN_PLACE: dict[str, Any] = {}
"""libp2p's own object of every target some workaround replaces in place, by target name
(`remember`), so that another workaround that relies on the same target checks libp2p's
source, not ours."""


def remember(originals: dict[str, Any]) -> None:
    """Record libp2p's own object of each target (by name) a workaround replaces."""
    for target, original in originals.items():
        _PATCHED_IN_PLACE.setdefault(target, original)


def drifted(expected: dict[str, str], originals: dict[str, Any] | None = None) -> list[str]:
    """The targets of `expected` whose source is no longer the one the workaround was
    written against. `originals` gives the original object of a target that is patched
    in place (its current value is ours), by target name; so does `remember`."""
    out = []
    for target, digest in expected.items():
        obj = ((originals or {}).get(target) or _PATCHED_IN_PLACE.get(target)
               or resolve(target))
        if source_digest(obj) != digest:
            out.append(target)
    return out
