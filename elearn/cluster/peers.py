"""Whether this host reaches the TF ports of its peers: checked before training, so that a firewall
between hosts is named at once.

ZooKeeper being reachable says nothing about the TF ports: a node meets its peers through ZooKeeper
on one known port, then TensorFlow connects to ports picked at random. Left to TensorFlow, a blocked
port is found only when training first needs that peer, and shows up as gRPC retrying or as an
error that does not say which host could not reach which. So every process that will connect to
a peer first opens a TCP connection to it, all peers in parallel, each retried until a deadline
(the register timeout, at most :data:`PEER_TIMEOUT`), and a peer still not connected is named with
its address and the last error.

Who connects to whom follows TensorFlow: in PS mode the coordinator (on the driver's host) to every
node and every worker to every parameter server; in allreduce mode every worker to every other.
A connection to a port nobody listens on is refused, which a firewall's REJECT looks like, so the
port probed is always one that listens: PS-mode servers are up when probed, and an allreduce worker
holds its port open with :func:`hold_port` until the probes are done.
"""
from __future__ import annotations

import socket
import threading
import time

from elearn.cluster.waits import wait_until

PEER_TIMEOUT = 30.0  # seconds: a host that answers at all answers in milliseconds


def unreachable(peers: dict, within: float = PEER_TIMEOUT) -> dict:
    """``{name: "host:port"}`` -> ``{name: why}`` for each peer not connected within ``within``
    seconds (the register timeout, say), and never more than :data:`PEER_TIMEOUT`."""
    failed: dict = {}
    timeout = min(within, PEER_TIMEOUT)
    deadline = time.monotonic() + timeout

    def probe(name: str, address: str) -> None:
        host, port = address.rsplit(":", 1)
        why = ""

        def connected() -> bool:
            nonlocal why
            left = deadline - time.monotonic()
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.1, min(left, 5.0))):
                    return True
            except OSError as exc:
                why = f"{exc.__class__.__name__}: {exc.strerror or exc}"
                return False

        try:
            wait_until(connected, timeout, interval=0.5)
        except TimeoutError:
            failed[name] = why  # the last attempt's error

    threads = [threading.Thread(target=probe, args=item, name=f"elearn-probe-{item[0]}", daemon=True)
               for item in peers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return {name: failed[name] for name in peers if name in failed}


def describe(unreached: dict, peers: dict) -> str:
    """``ps:0 at 10.0.0.2:4711 (TimeoutError: timed out); ...``"""
    return "; ".join(f"{name} at {peers[name]} ({why})" for name, why in unreached.items())


def hold_port() -> socket.socket:
    """A listening socket on a free port of every interface: the port a TF server takes once the
    socket is closed, open meanwhile for peers to probe. Probes are never accepted: closing the
    socket resets them, which leaves no connection lingering on the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", 0))
    sock.listen(128)
    return sock


FIX = ("TensorFlow's nodes connect to each other on ports picked at random: allow TCP between the "
       "executors' hosts, and from the driver's host to them, on every port (a firewall or "
       "security group between them blocks it)")
