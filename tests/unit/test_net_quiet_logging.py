"""py-libp2p's routine complaints about peers that leave stay out of a user's terminal:
`ask` prints one error line, and a broken pipe in py-libp2p's identify answer (a peer
gone before it was sent) once put a traceback above it (clean-clone run, 2026-12-04)."""

from __future__ import annotations

import logging

import pytest

from p2pinfer.net.host import quiet_libp2p_logging


@pytest.mark.parametrize("name", [
    "libp2p.identity.identify", "libp2p.network.swarm", "libp2p.relay.circuit_v2",
])
def test_routine_peer_errors_are_not_logged(name: str) -> None:
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(logging.NOTSET)
    try:
        quiet_libp2p_logging()
        assert not logger.isEnabledFor(logging.ERROR)
    finally:
        logger.setLevel(saved)


def test_a_level_the_user_chose_is_kept() -> None:
    logger = logging.getLogger("libp2p.identity.identify")
    saved = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        quiet_libp2p_logging()
        assert logger.isEnabledFor(logging.DEBUG)
    finally:
        logger.setLevel(saved)
