#!/bin/sh
# Entry point of the p2pinfer node image.
#
#   (no arguments) | node [EXTRA...]   run a node in the role $P2PINFER_ROLE
#   health                             the HEALTHCHECK: the gateway answers /api/version
#   bootstrap-addr                     print the bootstrap's multiaddr (waits for it)
#   anything else                      run it (e.g. `p2pinfer --version`, `p2pinfer id`)
#
# How nodes find the bootstrap: the bootstrap writes its PeerID (from its own key,
# which lives in its /data volume, so it survives restarts) to the shared
# rendezvous volume; every other node waits for that file (bounded), resolves the
# bootstrap's container name on the private network and dials
# /ip4/<its address>/tcp/<port>/p2p/<PeerID>. Node internals are unchanged.
#
# Settings (environment):
#   P2PINFER_ROLE            bootstrap | provider | validator | consumer (default provider)
#   P2PINFER_HOME            node home, a volume (default /data)
#   P2PINFER_RENDEZVOUS      shared volume with bootstrap.peer_id (default /rendezvous)
#   P2PINFER_BOOTSTRAP_HOST  the bootstrap's name on the network (default bootstrap)
#   P2PINFER_P2P_PORT        libp2p TCP port, the same in every container (default 4001)
#   P2PINFER_ANNOUNCE        the address others dial, or "off" (default /dns4/<hostname>/tcp/<port>:
#                            the node listens on 0.0.0.0, which is no address to advertise, and
#                            Docker's DNS follows the container to a new IP after a reconnect)
#   P2PINFER_GATEWAY         HOST:PORT of the HTTP gateway, or "off" (default 127.0.0.1:11434)
#   P2PINFER_API_KEY         the gateway's API key(s), read by the node (needed off loopback)
#   P2PINFER_BACKEND         backend flag of `p2pinfer node` (default embedded; none: serve nothing)
#   P2PINFER_MODELS          models to serve, space-separated (default smollm2:135m; set but
#                            empty: every model the backend has)
#   P2PINFER_NODE_ARGS       further flags for `p2pinfer node` (e.g. a role's own flags)
#   P2PINFER_WAIT_S          how long to wait for the bootstrap's PeerID (default 120)
#   P2PINFER_CHAIN_RPC       the testnet chain's JSON-RPC URL on the network (`testnet up
#                            --docker --chain`: http://chain:8545); empty: no chain. The node
#                            waits (bounded) for the chain's deployment file and settles on its
#                            Channels contract (--chain-rpc / --chain-contract)
#   P2PINFER_CHAIN_DEPLOYMENT that deployment file (default $P2PINFER_RENDEZVOUS/chain.json,
#                            written by the chain container)
set -eu

HOME_DIR=${P2PINFER_HOME:-/data}
RENDEZVOUS=${P2PINFER_RENDEZVOUS:-/rendezvous}
ROLE=${P2PINFER_ROLE:-provider}
BOOTSTRAP_HOST=${P2PINFER_BOOTSTRAP_HOST:-bootstrap}
P2P_PORT=${P2PINFER_P2P_PORT:-4001}
GATEWAY=${P2PINFER_GATEWAY:-127.0.0.1:11434}
ANNOUNCE=${P2PINFER_ANNOUNCE:-/dns4/$(hostname)/tcp/$P2P_PORT}
BACKEND=${P2PINFER_BACKEND:-embedded}
MODELS=${P2PINFER_MODELS-smollm2:135m}
WAIT_S=${P2PINFER_WAIT_S:-120}
CHAIN_RPC=${P2PINFER_CHAIN_RPC:-}
CHAIN_DEPLOYMENT=${P2PINFER_CHAIN_DEPLOYMENT:-$RENDEZVOUS/chain.json}

log() { echo "entrypoint: $*" >&2; }

# The PeerID of this node; creates its key (0600, in the home volume) on first start.
own_peer_id() {
  [ -f "$HOME_DIR/node.key" ] || p2pinfer init --home "$HOME_DIR" >/dev/null
  p2pinfer id --home "$HOME_DIR"
}

# /ip4/ADDR/tcp/PORT/p2p/PEERID of the bootstrap, waiting (bounded) until it is known.
bootstrap_addr() {
  deadline=$(( $(date +%s) + WAIT_S ))
  while :; do
    peer=$(cat "$RENDEZVOUS/bootstrap.peer_id" 2>/dev/null || true)
    ip=$(getent ahostsv4 "$BOOTSTRAP_HOST" 2>/dev/null | awk 'NR == 1 { print $1 }')
    if [ -n "$peer" ] && [ -n "$ip" ]; then
      echo "/ip4/$ip/tcp/$P2P_PORT/p2p/$peer"
      return 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "the bootstrap ($BOOTSTRAP_HOST, $RENDEZVOUS/bootstrap.peer_id) is not known after ${WAIT_S}s"
      return 1
    fi
    sleep 0.5
  done
}

# The Channels address in the chain's deployment file, waiting (bounded) until it is written.
chain_contract() {
  deadline=$(( $(date +%s) + WAIT_S ))
  while :; do
    contract=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["channels"])' \
      "$CHAIN_DEPLOYMENT" 2>/dev/null || true)
    if [ -n "$contract" ]; then
      echo "$contract"
      return 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "the chain's deployment ($CHAIN_DEPLOYMENT) is not there after ${WAIT_S}s"
      return 1
    fi
    sleep 0.5
  done
}

run_node() {
  peer=$(own_peer_id)
  log "role $ROLE, peer $peer"
  set -- --home "$HOME_DIR" --listen "/ip4/0.0.0.0/tcp/$P2P_PORT" --backend "$BACKEND" "$@"
  for model in $MODELS; do
    set -- "$@" --models "$model"
  done
  if [ "$ROLE" = bootstrap ]; then
    # Written atomically: a reader sees the whole PeerID or no file.
    echo "$peer" >"$RENDEZVOUS/.bootstrap.peer_id.tmp"
    mv "$RENDEZVOUS/.bootstrap.peer_id.tmp" "$RENDEZVOUS/bootstrap.peer_id"
  else
    set -- "$@" --bootstrap "$(bootstrap_addr)"
  fi
  [ "$ANNOUNCE" = off ] || set -- "$@" --announce "$ANNOUNCE"
  if [ -n "$CHAIN_RPC" ]; then
    contract=$(chain_contract)  # an assignment: its failure stops the script (set -e)
    set -- "$@" --chain-rpc "$CHAIN_RPC" --chain-contract "$contract"
  fi
  if [ "$GATEWAY" = off ]; then
    set -- "$@" --no-gateway
  else
    set -- "$@" --gateway "$GATEWAY"
  fi
  # shellcheck disable=SC2086 # P2PINFER_NODE_ARGS is a list of flags
  exec p2pinfer node "$@" ${P2PINFER_NODE_ARGS:-}
}

health() {
  if [ "$GATEWAY" = off ]; then
    # No gateway: healthy once the node has written its status file.
    test -s "$HOME_DIR/node.json"
    return
  fi
  port=${GATEWAY##*:}
  # The API key (if the gateway has one) comes from the environment, not the command line.
  exec python3 -c "
import os, sys, urllib.request
key = os.environ.get('P2PINFER_API_KEY', '').split(',')[0].strip()
req = urllib.request.Request('http://127.0.0.1:$port/api/version')
if key:
    req.add_header('Authorization', 'Bearer ' + key)
try:
    with urllib.request.urlopen(req, timeout=4) as r:
        print(r.read(200).decode(errors='replace'))
except Exception as exc:
    sys.exit(f'unhealthy: gateway on port $port: {exc}')
"
}

case "${1:-node}" in
  node)
    [ $# -gt 0 ] && shift
    run_node "$@"
    ;;
  health) health ;;
  bootstrap-addr) bootstrap_addr ;;
  *) exec "$@" ;;
esac
