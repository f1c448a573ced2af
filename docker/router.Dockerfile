# A NAT router for the docker NAT testnet (p2pinfer/testnet/docker_nat.py): iptables,
# iproute2 and conntrack on the same base as the node image, nothing else. Built without a
# context, tagged with this file's digest (`router_image()`):
#
#   docker build -t p2pinfer-router:<digest> --build-arg BASE_IMAGE=localbase:bookworm - < docker/router.Dockerfile
#
# The same image holds the network namespace of each node behind a router (a container
# that only sleeps, whose default route points at the router), so the node image needs
# neither iproute2 nor NET_ADMIN.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iptables iproute2 conntrack \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log
CMD ["sleep", "infinity"]
