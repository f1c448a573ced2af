"""A docker testnet with real NATs: providers and consumers behind routers that masquerade.

Three docker networks:

- `public` ("the internet"): a bootstrap node (a public provider of the model, dearer, not a
  relay), a relay node (`--relay`, serves nothing) and the public side of two routers;
- `nat_a`: a provider behind router A; `nat_b`: a consumer behind router B.

The public network is `--internal` (nothing reaches the host's uplink). The private
ones cannot be: with br_netfilter on, Docker's isolation rules for an internal network drop
even bridged frames whose source or destination is outside its subnet, i.e. everything a
router forwards. Their host gateway is never used: nodes route through their router, and
the router's only default route is the public network's.

A router is a container of the small router image (docker/router.Dockerfile) with
NET_ADMIN and ip_forward on: `MASQUERADE` out of its public side (port-preserving, the
hole-punchable kind; `--random-fully`: a new random port per connection, the symmetric
kind), FORWARD policy DROP but for replies (`ESTABLISHED,RELATED`) and what goes out, and
on its own public address (INPUT) unsolicited packets dropped, not answered. A
node behind a router runs in the network namespace of a "holder" container (the router
image again, sleeping) whose default route points at the router, so the node image needs
neither iproute2 nor NET_ADMIN. The consumer container only sleeps: jobs are `p2pinfer ask`
runs in it (`docker exec`), with its home (ledger) in the container's /data volume.

Every container, network and volume carries the project's compose label, so
`testnet_docker.docker_down(project)` removes all of it. Subnets come from the project name
(10.X.Y.0/24, three in a row), so two projects rarely collide; `nat_up` fails if they do.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from p2pinfer.errors import TestnetError
from p2pinfer.testnet.docker import (
    PROJECT_LABEL,
    REPO_ROOT,
    SERVICE_LABEL,
    check_project,
    docker_down,
    image_size,
    last_log_line,
)
from p2pinfer.testnet.docker_status import _run

ROUTER_DOCKERFILE = REPO_ROOT / "docker" / "router.Dockerfile"
NETDELAY = Path(__file__).with_name("netdelay.py")
P2P_PORT = 4001
MODEL = "fake:latest"
NatKind = Literal["cone", "symmetric"]
_CALL_S = 120.0


@dataclass(frozen=True)
class NatTestnet:
    """A running NAT testnet: container names, addresses and PeerIDs."""

    project: str
    image: str
    bootstrap: str  # container names
    relay: str
    provider: str
    consumer: str
    routers: tuple[str, str]  # A (provider's), B (consumer's)
    bootstrap_addr: str  # /ip4/.../tcp/4001/p2p/<id>
    relay_addr: str
    bootstrap_peer: str
    relay_peer: str
    provider_peer: str
    wan: tuple[str, str]  # the routers' public addresses
    private: tuple[str, str]  # the provider's and the consumer's own addresses


def _docker(*args: str, what: str, timeout_s: float = _CALL_S, check: bool = True) -> str:
    return _run(["docker", *args], timeout_s=timeout_s, what=what, check=check).stdout.strip()


def _subnets(project: str) -> tuple[str, str, str]:
    """Three consecutive /24s under 10.0.0.0/8 derived from the project name."""
    h = int.from_bytes(hashlib.sha256(project.encode()).digest()[:4], "big")
    a, b = 100 + h % 120, (h // 120) % 80 * 3
    return f"10.{a}.{b}", f"10.{a}.{b + 1}", f"10.{a}.{b + 2}"


@functools.cache
def router_image() -> str:
    """The router image's tag: its Dockerfile's digest, so a changed Dockerfile builds a new
    image instead of reusing one that lacks a tool the rules now use (conntrack)."""
    return "p2pinfer-router:" + hashlib.sha256(ROUTER_DOCKERFILE.read_bytes()).hexdigest()[:12]


def ensure_router_image(base_image: str, tag: str | None = None) -> None:
    """Build the router image on `base_image` unless it exists (docker's cache after)."""
    tag = tag or router_image()
    if image_size(tag) is not None:
        return
    with tempfile.TemporaryDirectory() as empty:  # the image copies nothing in
        _run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base_image}", "-t", tag,
              "-f", str(ROUTER_DOCKERFILE), empty], timeout_s=600, what=f"building {tag}")


def _labels(project: str, service: str) -> list[str]:
    return ["--label", f"{PROJECT_LABEL}={project}", "--label", f"{SERVICE_LABEL}={service}"]


def _node_env(**env: str) -> list[str]:
    out = []
    for key, value in env.items():
        out += ["-e", f"P2PINFER_{key.upper()}={value}"]
    return out


def set_nat(router: str, kind: NatKind) -> None:
    """(Re)write the router's rules: masquerade out of its public side, no new inbound.
    Connections already open keep their mappings; new ones get `kind`'s.

    Half-open outbound attempts (TCP SYN_SENT, e.g. a failed punch's) are dropped from
    conntrack first: Linux NAT reuses a source endpoint's existing mapping for its new
    flows, so one left by the other kind would go on mapping that endpoint its old way
    (seen: a provider's port 4001, mapped to 1447 under `--random-fully`, still left as
    1447 after the switch back, until the SYN's entry expired 2 min later, so a punch
    aimed at 4001 failed). A router of one kind never holds the other's mappings."""
    random = " --random-fully" if kind == "symmetric" else ""
    script = (
        "set -e; pub=$(cat /run/pub_if);"
        " conntrack -D -p tcp --state SYN_SENT >/dev/null 2>&1 || true;"
        " iptables -t nat -F POSTROUTING;"
        f" iptables -t nat -A POSTROUTING -o $pub -j MASQUERADE{random};"
        " iptables -P FORWARD DROP; iptables -F FORWARD;"
        " iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT;"
        " iptables -A FORWARD ! -i $pub -o $pub -j ACCEPT;"
        # The router itself answers nothing from outside either: an unsolicited SYN is
        # dropped, not reset (a reset would also kill the mapping a punch just made).
        " iptables -F INPUT;"
        " iptables -A INPUT -i $pub -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT;"
        " iptables -A INPUT -i $pub -j DROP"
    )
    _docker("exec", router, "sh", "-c", script, what=f"NAT rules in {router}")


def nat_rules(router: str) -> str:
    """`iptables -S` and the nat table of `router`, for assertions and reports."""
    return _docker("exec", router, "sh", "-c", "iptables -S FORWARD; iptables -S INPUT; "
                   "iptables -t nat -S POSTROUTING", what=f"rules of {router}")


def set_delay(router: str, delay_ms: float, timeout_s: float = 20.0) -> None:
    """Delay every packet `router` forwards by `delay_ms`, each way (so a round trip through
    it grows by twice that; 0 removes the delay): `netdelay.py` on NFQUEUE 0, this kernel
    having no netem. The queue rule is added only once the script has bound the queue, and
    `--queue-bypass` lets packets through unharmed should the script die."""
    _docker("exec", router, "sh", "-c",
            "iptables -t mangle -F FORWARD; rm -f /run/netdelay.log;"
            " if [ -f /run/netdelay.pid ]; then pid=$(cat /run/netdelay.pid); kill $pid;"
            " while kill -0 $pid 2>/dev/null; do sleep 0.05; done; fi;"
            " rm -f /run/netdelay.pid",
            what=f"removing the delay on {router}")
    if delay_ms <= 0:
        return
    _docker("cp", str(NETDELAY), f"{router}:/run/netdelay.py", what=f"copying to {router}")
    _docker("exec", "-d", router, "sh", "-c",
            f"echo $$ > /run/netdelay.pid; exec python3 /run/netdelay.py {delay_ms:g} "
            "> /run/netdelay.log 2>&1", what=f"starting the delay on {router}")
    deadline = time.monotonic() + timeout_s
    while "ready" not in (log := _docker("exec", router, "cat", "/run/netdelay.log",
                                         what="netdelay log", check=False)):
        if time.monotonic() > deadline or "Error" in log:
            raise TestnetError(f"the delay on {router} did not start: {log[-300:]}")
        time.sleep(0.2)
    _docker("exec", router, "iptables", "-t", "mangle", "-A", "FORWARD", "-j", "NFQUEUE",
            "--queue-num", "0", "--queue-bypass", what=f"queueing {router}'s packets")


def _start_router(project: str, name: str, public: str, pub_ip: str, private: str,
                  priv_ip: str) -> None:
    _docker("create", "--name", name, *_labels(project, "router"), "--network", public,
            "--ip", pub_ip, "--cap-add", "NET_ADMIN", "--sysctl", "net.ipv4.ip_forward=1",
            router_image(), what=f"creating {name}")
    _docker("network", "connect", "--ip", priv_ip, private, name, what=f"connecting {name}")
    _docker("start", name, what=f"starting {name}")
    # Its only default route goes out of the public side (the one to the public gateway).
    pub_gw = pub_ip.rsplit(".", 1)[0] + ".1"
    _docker("exec", name, "sh", "-c",
            f"ip route replace default via {pub_gw} && ip -o -4 route get {pub_gw} | "
            "sed -n 's/.* dev \\([^ ]*\\).*/\\1/p' > /run/pub_if",
            what=f"routes of {name}")


def _start_holder(project: str, name: str, private: str, ip: str, router_ip: str) -> None:
    _docker("run", "-d", "--name", name, *_labels(project, "netns"), "--network", private,
            "--ip", ip, "--cap-add", "NET_ADMIN", router_image(), what=f"starting {name}")
    _docker("exec", name, "ip", "route", "replace", "default", "via", router_ip,
            what=f"default route of {name}")


def _peer_id(container: str) -> str:
    return _docker("exec", container, "p2pinfer", "id", what=f"PeerID of {container}")


def _wait_log(container: str, needle: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _docker("inspect", "--format", "{{.State.Status}}", container,
                        what="docker inspect", check=False)
        if state not in ("running", "created"):
            raise TestnetError(f"{container} stopped: {last_log_line(container)}")
        proc = _run(["docker", "logs", container], timeout_s=30, what="docker logs", check=False)
        if needle in proc.stdout + proc.stderr:
            return
        time.sleep(1.0)
    raise TestnetError(f"{container}: no {needle!r} within {timeout_s:.0f} s "
                       f"(last: {last_log_line(container)})")


# Over 60 lines by design: the whole topology in the order it must start, in one place.
def nat_up(project: str, image: str, *, rate: float = 200.0, kind: NatKind = "cone",
           timeout_s: float = 240.0) -> NatTestnet:
    """Start the NAT testnet (`rate`: the fake engine's tokens per second on both
    providers); on failure everything is removed again."""
    check_project(project)
    if image_size(router_image()) is None:
        raise TestnetError(f"no image {router_image()}: ensure_router_image first")
    pub, net_a, net_b = _subnets(project)
    public, nat_a, nat_b = f"{project}_public", f"{project}_nat_a", f"{project}_nat_b"
    names = {s: f"{project}-{s}" for s in (
        "bootstrap", "relay", "router-a", "router-b", "netns-a", "netns-b", "provider",
        "consumer")}
    rendezvous = f"{project}_rendezvous"
    backend = f"fake-stream={rate:g}"
    try:
        for net, subnet in ((public, pub), (nat_a, net_a), (nat_b, net_b)):
            internal = ["--internal"] if net == public else []
            _docker("network", "create", *internal, "--subnet", f"{subnet}.0/24",
                    "--label", f"{PROJECT_LABEL}={project}", net, what=f"creating {net}")
        _docker("volume", "create", "--label", f"{PROJECT_LABEL}={project}", rendezvous,
                what="creating the rendezvous volume")
        # No --init: the node is PID 1, so the bench reads its CPU time at /proc/1.
        common = ["-v", f"{rendezvous}:/rendezvous"]
        _docker("run", "-d", "--name", names["bootstrap"], *_labels(project, "bootstrap"),
                "--network", public, "--ip", f"{pub}.10", *common, *_node_env(
                    role="bootstrap", backend=backend, models=MODEL,
                    announce=f"/ip4/{pub}.10/tcp/{P2P_PORT}",
                    node_args="--no-relay --price 900 --advert-interval 5"),
                image, what="starting the bootstrap")
        _docker("run", "-d", "--name", names["relay"], *_labels(project, "relay"),
                "--network", public, "--ip", f"{pub}.11", *common, *_node_env(
                    role="relay", backend="none", models="", bootstrap_host=f"{pub}.10",
                    announce=f"/ip4/{pub}.11/tcp/{P2P_PORT}", node_args="--relay"),
                image, what="starting the relay")
        _start_router(project, names["router-a"], public, f"{pub}.20", nat_a, f"{net_a}.2")
        _start_router(project, names["router-b"], public, f"{pub}.21", nat_b, f"{net_b}.2")
        for router in (names["router-a"], names["router-b"]):
            set_nat(router, kind)
        _start_holder(project, names["netns-a"], nat_a, f"{net_a}.10", f"{net_a}.2")
        _start_holder(project, names["netns-b"], nat_b, f"{net_b}.10", f"{net_b}.2")
        _wait_log(names["relay"], "relay service on", timeout_s)
        bootstrap_peer, relay_peer = _peer_id(names["bootstrap"]), _peer_id(names["relay"])
        relay_addr = f"/ip4/{pub}.11/tcp/{P2P_PORT}/p2p/{relay_peer}"
        # No --reserve-relay: the provider finds the relay as a real one would (a DHT walk
        # meets it, AutoNAT says private, it reserves at a public peer serving relays).
        _docker("run", "-d", "--name", names["provider"], *_labels(project, "provider"),
                "--network", f"container:{names['netns-a']}", *common, *_node_env(
                    role="provider", backend=backend, models=MODEL, announce="off",
                    bootstrap_host=f"{pub}.10",
                    node_args="--no-relay --price 100 --advert-interval 5"),
                image, what="starting the provider")
        _docker("run", "-d", "--name", names["consumer"], *_labels(project, "consumer"),
                "--network", f"container:{names['netns-b']}", "--no-healthcheck",
                "--entrypoint", "sleep", image, "infinity", what="starting the consumer")
        _wait_log(names["provider"], "relay slot held", timeout_s)
        return NatTestnet(
            project=project, image=image, bootstrap=names["bootstrap"], relay=names["relay"],
            provider=names["provider"], consumer=names["consumer"],
            routers=(names["router-a"], names["router-b"]),
            bootstrap_addr=f"/ip4/{pub}.10/tcp/{P2P_PORT}/p2p/{bootstrap_peer}",
            relay_addr=relay_addr, bootstrap_peer=bootstrap_peer, relay_peer=relay_peer,
            provider_peer=_peer_id(names["provider"]), wan=(f"{pub}.20", f"{pub}.21"),
            private=(f"{net_a}.10", f"{net_b}.10"))
    except BaseException:
        docker_down(project)
        raise


def ask(net: NatTestnet, *args: str, timeout_s: float = 120.0) -> dict[str, object]:
    """`p2pinfer ask --json ARGS` in the consumer container; its JSON, or TestnetError."""
    proc = _run(["docker", "exec", net.consumer, "p2pinfer", "ask", "--json",
                 "--bootstrap", net.bootstrap_addr, "--model", MODEL, *args],
                timeout_s=timeout_s, what="ask in the consumer", check=False)
    if proc.returncode != 0:
        raise TestnetError(f"ask exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out
