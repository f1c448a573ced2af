"""The one testnet every attack test in this package runs against (see
tests/support/attack_net.py). Started once for the package: each attack must
leave the honest network serving, which the next test then relies on too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.attack_net import AttackNet, attack_testnet


@pytest.fixture(scope="package")
def attack_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackNet]:
    with attack_testnet(tmp_path_factory.mktemp("attack-net")) as net:
        yield net
