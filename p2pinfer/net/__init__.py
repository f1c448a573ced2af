"""The network layer: the only package that imports py-libp2p (see docs/network.md).

Start a node's network with `run_host(NetConfig(...))`; everything else is a
method of the `NetHost` it yields.
"""

from p2pinfer.net.adverts import (
    ADVERTS_TOPIC,
    AdvertVerifier,
    Catalog,
    Offer,
    ProviderEntry,
    VerifiedAdvert,
)
from p2pinfer.net.config import NetConfig
from p2pinfer.net.dht import ProviderRef, model_key, model_key_digest
from p2pinfer.net.gossip import GossipMessage
from p2pinfer.net.host import NetHost, run_host
from p2pinfer.net.info import INFO_PROTOCOL, FetchedAdvert
from p2pinfer.net.streams import DEFAULT_MAX_FRAME, NetStream

__all__ = [
    "ADVERTS_TOPIC",
    "DEFAULT_MAX_FRAME",
    "INFO_PROTOCOL",
    "AdvertVerifier",
    "Catalog",
    "FetchedAdvert",
    "GossipMessage",
    "NetConfig",
    "NetHost",
    "NetStream",
    "Offer",
    "ProviderEntry",
    "ProviderRef",
    "VerifiedAdvert",
    "model_key",
    "model_key_digest",
    "run_host",
]
