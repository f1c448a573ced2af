"""The network layer: the only package that imports py-libp2p (see docs/network.md).

Start a node's network with `run_host(NetConfig(...))`; everything else is a
method of the `NetHost` it yields.
"""

from p2pinfer.net.adverts import (
    ADVERTS_TOPIC,
    Catalog,
    ProviderEntry,
    VerifiedAdvert,
    verify_advert,
)
from p2pinfer.net.config import NetConfig
from p2pinfer.net.dht import ProviderRef, model_key, model_key_digest
from p2pinfer.net.gossip import GossipMessage
from p2pinfer.net.host import run_host
from p2pinfer.net.info import INFO_PROTOCOL, FetchedAdvert
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.streams import NetStream

__all__ = [
    "ADVERTS_TOPIC",
    "INFO_PROTOCOL",
    "Catalog",
    "FetchedAdvert",
    "GossipMessage",
    "NetConfig",
    "NetHost",
    "NetStream",
    "ProviderEntry",
    "ProviderRef",
    "VerifiedAdvert",
    "model_key",
    "model_key_digest",
    "run_host",
    "verify_advert",
]
