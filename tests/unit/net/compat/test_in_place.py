"""Canaries for the py-libp2p workarounds that live in place (docs/network.md, "Not moved
into compat/"): the libp2p code they override or rely on is still the 0.8.1 code they
were written against. Their behaviour is tested with real hosts in
tests/integration/test_net_{relay,dht,autonat,pubsub_robust,ping}*.py."""

from __future__ import annotations

from types import ModuleType

import pytest

from p2pinfer.net import autonat, dcutr, dht, gossip, ping
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p


@pytest.mark.parametrize("module", [dcutr, dht, gossip, autonat, ping],
                         ids=lambda m: m.__name__)
def test_canary_libp2p_is_the_version_the_workaround_was_written_for(module: ModuleType) -> None:
    assert_written_for_installed_libp2p(module)
