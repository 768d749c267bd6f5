"""The TensorFlow server process of one PS-mode node (``python -m elearn.runtime.tf_server``).

Its node task starts it as soon as the node has reserved its port, with its role and index in
``ELEARN_NODE``; it imports TensorFlow at once, then reads the cluster spec as one JSON line on stdin
(sent when the driver publishes it), so the import overlaps the cluster forming. It lives until its
node task stops it; if the task disappears, stdin reaches EOF (and PDEATHSIG fires) and it exits.
"""
from __future__ import annotations

import json
import os
import sys

from elearn.cluster.procs import exit_when_parent_goes


def main() -> None:
    cfg = json.loads(os.environ["ELEARN_NODE"])
    # Workers and PS fail fast on lost peers so the coordinator, not they, decides what to retry.
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    # A TF server only runs graphs the coordinator sends; it never needs Keras, which TensorFlow's
    # __init__ imports eagerly (a second of CPU per node, while every node starts at once).
    # A None entry makes that import fail, which TensorFlow tolerates; removed right after.
    keras_blocked = "keras" not in sys.modules
    if keras_blocked:
        sys.modules["keras"] = None
    try:
        import tensorflow as tf
    finally:
        if keras_blocked:
            del sys.modules["keras"]

    line = sys.stdin.buffer.readline()
    if not line:
        return  # the node task went away before the cluster formed
    cfg.update(json.loads(line))
    exit_when_parent_goes(0)

    server = tf.distribute.Server(
        tf.train.ClusterSpec(cfg["cluster"]), job_name=cfg["role"], task_index=cfg["index"],
        protocol="grpc", start=True)
    # The interpreter's prefix shows which environment (a shipped archive or not) the node runs in.
    print(f"elearn node {cfg['role']}:{cfg['index']} serving at {server.target} "
          f"(python {sys.prefix}, tensorflow {os.path.dirname(tf.__file__)})", flush=True)
    server.join()


if __name__ == "__main__":
    main()
