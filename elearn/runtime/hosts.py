"""The address a node advertises to its peers."""
from __future__ import annotations

import os
import socket


def advertise_host(loopback: bool) -> str:
    """``ELEARN_HOST`` if set; loopback for single-machine masters; else this host's address."""
    if os.environ.get("ELEARN_HOST"):
        return os.environ["ELEARN_HOST"]
    if loopback:
        return "127.0.0.1"
    try:
        return socket.gethostbyname(socket.getfqdn())
    except OSError:
        return socket.gethostbyname(socket.gethostname())
