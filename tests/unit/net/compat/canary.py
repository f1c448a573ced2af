"""Shared canary checks: the installed libp2p is the one a compat module was written for."""

from __future__ import annotations

from types import ModuleType

from p2pinfer.net.compat import _canary


def assert_written_for_installed_libp2p(module: ModuleType) -> None:
    """Fail, naming the module to revisit, if libp2p's version or any function listed in
    `module.PATCHED` differs from the one the workaround was written against."""
    installed = _canary.installed_libp2p()
    assert installed == _canary.LIBP2P_VERSION, (
        f"libp2p {installed} installed; {module.__name__} was written for "
        f"{_canary.LIBP2P_VERSION}: check whether upstream fixed the defect "
        f"({getattr(module, 'UPSTREAM', None) or getattr(module, 'DRAFT', None)}), then drop "
        f"the workaround or update PATCHED"
    )
    originals = getattr(module, "ORIGINALS", None)
    drifted = _canary.drifted(module.PATCHED, originals)
    assert drifted == [], (
        f"libp2p code patched by {module.__name__} changed: {drifted}. Re-read it; drop "
        f"the workaround if upstream fixed the defect, else re-check it and update PATCHED"
    )
