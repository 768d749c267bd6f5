"""Addresses: which one this host advertises to others, and whether an address is this host's.

On a cluster, hosts often have several interfaces (a management network, a data network, Docker
bridges) and a hostname that resolves to the wrong one. The address worth advertising to a peer is
the one of the interface that routes to it: elearn's nodes advertise the address routing to the
driver (the address its ZooKeeper is reached at), and a driver on a Spark Connect client the one
routing to the server. ``ELEARN_HOST`` overrides both.
"""
from __future__ import annotations

import os
import socket


def route_to(host: str) -> str | None:
    """This host's address on the interface that routes to ``host`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(host), 9))
            return s.getsockname()[0]
    except OSError:
        return None


def is_local_address(host: str) -> bool:
    """Whether ``host`` names this machine (one of its addresses)."""
    try:
        address = socket.gethostbyname(host)
    except OSError:
        return False
    if address.startswith("127."):
        return True
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))  # only an address of this machine can be bound
        return True
    except OSError:
        return False


def advertise_host(same_host: bool, towards: str | None = None) -> str:
    """The address peers reach this process at: ``ELEARN_HOST`` if set; loopback when every process
    runs on this host; else the address routing to ``towards``, or this host's name's address."""
    if os.environ.get("ELEARN_HOST"):
        return os.environ["ELEARN_HOST"]
    if same_host:
        return "127.0.0.1"
    if towards:
        routed = route_to(towards)
        if routed:
            return routed
    try:
        return socket.gethostbyname(socket.getfqdn())
    except OSError:
        return socket.gethostbyname(socket.gethostname())
