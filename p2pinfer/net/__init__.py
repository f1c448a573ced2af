"""The network layer: transport only, the one package that imports py-libp2p (see
docs/network.md and docs/architecture.md).

Start a node's network with `net.host.run_host(NetConfig(...))`; everything else is
a method of the `net.nethost.NetHost` it yields. Import each name from its own
module: this package re-exports nothing, so no module of it imports it back.
"""
