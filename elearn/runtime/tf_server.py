"""The TensorFlow server process of one PS-mode node (``python -m elearn.runtime.tf_server``).

Its node task starts it as soon as the node has reserved its port, with its role and index in
``ELEARN_NODE``; it imports TensorFlow at once, then reads the cluster spec as one JSON line on stdin
(sent when the driver publishes it), so the import overlaps the cluster forming. It lives until its
node task stops it; if the task disappears, stdin reaches EOF (and PDEATHSIG fires) and it exits.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import types

from elearn.cluster.procs import exit_when_parent_goes


def _import_server_lib() -> types.ModuleType:
    """TensorFlow's ``server_lib`` without running ``tensorflow/__init__.py``.

    A TF server only runs the graphs the coordinator sends: it needs TensorFlow's C++ runtime
    (every kernel is in ``libtensorflow_cc``, loaded with the session wrapper ``server_lib`` uses),
    not the Python API that ``import tensorflow`` builds. That import is 3.0 CPU-s with Keras
    blocked; ``server_lib`` through an empty ``tensorflow`` package is 0.5 CPU-s. Every PS-mode
    node imports at the same moment, three of them on a 2-core laptop next to the coordinator and
    the driver's JVM, so the 2.5 s saved per node is most of a node's share of the start.

    The empty package stays in ``sys.modules`` (this process imports nothing else of TensorFlow).
    If a TensorFlow release moves ``server_lib`` or needs its package initialised, the full
    import (Keras blocked: it is never used here) is the fallback.
    """
    spec = importlib.util.find_spec("tensorflow")
    if spec is None:
        raise SystemExit("elearn: TensorFlow is not installed in this node's environment "
                         f"({sys.prefix}); ship one that has it (--venv/--conda-env)")
    shell = types.ModuleType("tensorflow")
    shell.__path__ = list(spec.submodule_search_locations or [])
    shell.__spec__, shell.__file__ = spec, spec.origin
    sys.modules["tensorflow"] = shell
    try:
        from tensorflow.python.training import server_lib
        return server_lib
    except Exception:  # noqa: BLE001 - any failure of the short way means: take the long one
        for name in [n for n in sys.modules if n.split(".")[0] == "tensorflow"]:
            del sys.modules[name]
    keras_blocked = "keras" not in sys.modules
    if keras_blocked:
        # TensorFlow's __init__ tolerates a failing Keras import; a None entry makes it fail.
        sys.modules["keras"] = None
    try:
        from tensorflow.python.training import server_lib
    finally:
        if keras_blocked:
            del sys.modules["keras"]
    return server_lib


def _package_dir(server_lib: types.ModuleType) -> str:
    """TensorFlow's installed folder (``.../site-packages/tensorflow``)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(server_lib.__file__))))


def main() -> None:
    cfg = json.loads(os.environ["ELEARN_NODE"])
    # Workers and PS fail fast on lost peers so the coordinator, not they, decides what to retry.
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    server_lib = _import_server_lib()

    line = sys.stdin.buffer.readline()
    if not line:
        return  # the node task went away before the cluster formed
    cfg.update(json.loads(line))
    exit_when_parent_goes(0)

    server = server_lib.Server(
        server_lib.ClusterSpec(cfg["cluster"]), job_name=cfg["role"], task_index=cfg["index"],
        protocol="grpc", start=True)
    # The interpreter's prefix shows which environment (a shipped archive or not) the node runs in.
    print(f"elearn node {cfg['role']}:{cfg['index']} serving at {server.target} "
          f"(python {sys.prefix}, tensorflow {_package_dir(server_lib)})", flush=True)
    server.join()


if __name__ == "__main__":
    main()
