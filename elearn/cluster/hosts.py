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


def _address_of(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def _host_of(url: str) -> str | None:
    """The host a master or server URL names: ``spark://h1:7077,h2:7077`` -> h1,
    ``k8s://https://api:6443`` -> api, ``sc://h:15002/;token=x`` -> h; None for ``yarn``."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    if "://" in rest:  # k8s://https://...
        rest = rest.split("://", 1)[1]
    host = rest.split(",")[0].split("/")[0].split(";")[0]
    if host.startswith("["):
        return host[1:].split("]")[0] or None
    return host.rsplit(":", 1)[0] if ":" in host else (host or None)


def listen_address(master: str, remote: str | None = None, driver_host: str | None = None) -> str:
    """The one address the driver's embedded ZooKeeper listens on.

    Loopback when every node runs on this host (a ``local`` or ``local-cluster`` master of this
    process's Spark, which binds to loopback too): nothing else needs it, and nobody on the
    network can read the application's znodes. Otherwise the address nodes on other hosts are
    told to use: ``ELEARN_HOST``; ``spark.driver.host`` when set (``driver_host``), as the
    executors already reach it; the address of the interface routing to the master's host (or the
    Spark Connect server's, ``remote``); else this host's name's address, as Spark's default.
    """
    if not remote and master.startswith("local"):
        return "127.0.0.1"
    if os.environ.get("ELEARN_HOST"):
        return _address_of(os.environ["ELEARN_HOST"])
    if driver_host:
        return _address_of(driver_host)
    return advertise_host(False, towards=_host_of(remote or master))
