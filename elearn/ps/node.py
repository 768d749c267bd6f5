"""PS mode on a node: serve the driver's cluster spec with a TF server, restart it in place.

The TF server process (``elearn.runtime.tf_server``) starts before the node spools, so TensorFlow
imports while the rows arrive; it gets the cluster spec on stdin once the driver publishes one that
names this node at its address. A server that dies is started again at the same address (PS-mode
TensorFlow tolerates a worker coming back); when the driver re-forms the cluster under a new
generation every node serves the new spec with a fresh server.
"""
from __future__ import annotations

import json
import os
import subprocess

from elearn.cluster.logtail import tail
from elearn.cluster.peers import describe, unreachable
from elearn.cluster.procs import free_port, stop_process
from elearn.cluster.waits import wait_until
from elearn.runtime.node_task import NodeTask, wait_listening

SERVER = "elearn.runtime.tf_server"
START_TIMEOUT = 180.0  # a TF server importing TensorFlow on a loaded host


def start_server(task: NodeTask) -> None:
    """Reserve the node's port and start its TF server process, which imports TensorFlow now."""
    task.port = free_port()
    task.child = _new_server(task)


def _new_server(task: NodeTask) -> subprocess.Popen:
    return task.start_child(SERVER, env=server_env(task.role, task.index, os.environ), stdin=subprocess.PIPE)


def server_env(role: str, index: int, environ) -> dict:
    """What a node's TF server gets on top of the node's environment (``environ``): its role and
    index, and for a parameter server the allocator (:func:`ps_allocator_env`)."""
    env = {"ELEARN_NODE": json.dumps({"role": role, "index": index})}
    if role == "ps":
        env.update(ps_allocator_env(environ))
    return env


def ps_allocator_env(environ) -> dict:
    """A parameter server allocates with the system's allocator, which gives freed memory back.

    With oneDNN on (TensorFlow's default on x86), every tensor comes from oneDNN's CPU allocator,
    which keeps what it frees for reuse. Creating a table makes transient tensors of its size
    (``RandomUniform``'s draw, its scaled and shifted copies): a 5M x 16 table (305 MiB) left a
    parameter server 981 MiB larger, for good; with ``TF_ENABLE_ONEDNN_OPTS=0``, 306 MiB larger
    (the table), at the same peak. A parameter server runs gathers, scatters and optimizer updates,
    none of which oneDNN speeds up. A value the user set for it is kept.
    """
    return {} if "TF_ENABLE_ONEDNN_OPTS" in environ else {"TF_ENABLE_ONEDNN_OPTS": "0"}


def serve(task: NodeTask) -> dict:
    if task.child is None:
        start_server(task)
    child, task.child = task.child, None
    try:
        task.published = {"spool": task.metas, "rows": sum(m["rows"] for m in task.metas.values())} \
            if task.metas else {}
        task.announce("reserved")
        got = _wait_spec(task, 0)
        if got is None:
            return {}
        task.generation, spec = got
        child = _serve_spec(task, spec, child)
        while True:
            stopped = task.watch(child, also=lambda state: _wanted_generation(task, state) > task.generation
                                 and "a new generation")
            if stopped.over:
                break
            if stopped.reason:
                # The driver re-forms the cluster: serve the new spec with a fresh TF server.
                task.exit_codes.append(stop_process(child, grace=3))
                child = None
                task.update("reserved")
                got = _wait_spec(task, _wanted_generation(task, task.app_state() or {}))
                if got is None:
                    break
                task.generation, spec = got
                child = _serve_spec(task, spec)
                continue
            if task.policy.next_delay(f"{task.role}:{task.index} in place") is None:
                task.update("failed", exit_code=stopped.code, log_tail=tail(task.log_path))
                task.wait_app_over()
                break
            task.update("restarting", exit_code=stopped.code)
            child = _serve_spec(task, spec)
    finally:
        if child is not None:
            task.child = child  # NodeTask.run stops it and records its exit code
    return {}


def _serve_spec(task: NodeTask, spec: dict, child: subprocess.Popen | None = None) -> subprocess.Popen:
    child = child or _new_server(task)
    child.stdin.write((json.dumps({"cluster": spec}) + "\n").encode())
    child.stdin.flush()
    try:
        wait_listening(task.host, task.port, child, START_TIMEOUT)
    except Exception as exc:  # the driver shows this through Spark: say where and why
        stop_process(child, grace=1)
        raise task.failure(str(exc)) from None
    task.update("running", child_pid=child.pid)
    if task.role == "worker" and task.published.get("reached") != task.generation:
        _check_reach(task, spec, child)  # once per generation: not again on a restart in place
    return child


def _check_reach(task: NodeTask, spec: dict, child: subprocess.Popen) -> None:
    """A worker connects to every parameter server: check it can, once they all serve this
    generation, and tell the driver (``reached``: the generation checked; ``cannot_reach``: who
    could not be reached and why, empty when all were)."""
    generation = task.generation

    def all_serving():
        ps = task.reg.nodes("ps")
        return all(ps.get(i, {}).get("state") == "running" and ps[i].get("generation") == generation
                   for i in range(len(spec.get("ps", [])))) or task.app_over() \
            or _wanted_generation(task, task.app_state() or {}) > generation

    try:  # a PS that never serves is the driver's to name; the probe then says what it saw
        wait_until(all_serving, START_TIMEOUT, interval=0.2)
    except TimeoutError:
        pass
    addresses = {f"ps:{i}": a for i, a in enumerate(spec.get("ps", []))}
    missed = unreachable(addresses, task.spec.register_timeout)
    blocked = describe(missed, addresses)  # "" when every PS answered
    task.published.update(reached=generation, cannot_reach=blocked)
    if blocked:
        task.note(f"cannot reach {blocked}")
    task.update("running", child_pid=child.pid)


def _my_spec(task: NodeTask, min_generation: int):
    """The published cluster spec once it names this node at its address, as (generation, spec)."""
    try:
        published = task.reg.cluster()
    except Exception:
        return None
    if not published or published.get("generation", 0) < min_generation:
        return None
    spec = published["cluster"]
    addresses = spec.get(task.role, [])
    if task.index < len(addresses) and addresses[task.index] == f"{task.host}:{task.port}":
        return published.get("generation", 0), spec
    return None


def _wait_spec(task: NodeTask, min_generation: int):
    """(generation, spec) for this node, or None when the application ended first."""
    got = wait_until(lambda: _my_spec(task, min_generation) or task.app_over(),
                     task.spec.register_timeout + task.spec.feed_timeout,
                     on_timeout=lambda: task.failure("got no cluster spec"))
    return got if isinstance(got, tuple) else None


def _wanted_generation(task: NodeTask, state: dict) -> int:
    return int(state.get("generation", 0)) if state.get("state") in ("restarting", "running") \
        else task.generation
