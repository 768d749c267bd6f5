"""One application's resources: its directories, ZooKeeper, registry, Spark session and events.

``Application`` is a context manager; leaving it tears everything down in the order that keeps
logs quiet and leaves nothing running: mark the application final in ZooKeeper (daemons stop their
TF processes), wait for the Spark jobs to end, remove the znodes, stop Spark, stop ZooKeeper.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time

from elearn.config import SubmitOptions, elearn_home
from elearn.console import Console
from elearn.errors import KilledError, UserCodeError
from elearn.jsonlines import append_record
from elearn.registry import AppRegistry, app_credentials
from elearn.sparkops import SparkOps
from elearn.storage import parse_location
from elearn.zookeeper import EmbeddedZooKeeper, connect

log = logging.getLogger(__name__)

# Where nodes on other hosts keep their spools and logs, relative to their executor's working
# directory. Not a valid Python package name: a folder named like one ("elearn") in the working
# directory would shadow an editable install of elearn on the executor's import path.
NODE_DIR = "elearn-nodes"


def _location(flag: str, value: str):
    from elearn.errors import StorageError

    try:
        return parse_location(value)
    except StorageError as exc:
        raise StorageError(f"{flag}: {exc}") from None


class Application:
    def __init__(self, opts: SubmitOptions, console: Console | None = None):
        self.opts = opts
        self.id = opts.app_id()
        self.console = console or Console(opts.quiet)
        # Paths are made absolute, URIs kept (elearn.storage). An application directory on object
        # storage or HDFS is kept here and copied there while the application runs and at its end.
        work = _location("--work-dir", opts.work_dir) if opts.work_dir else None
        root = work.path if work is not None and work.kind != "remote" else os.path.join(elearn_home(), "apps")
        self.dir = os.path.join(root, self.id)
        self.work_copy = work.join(self.id) if work is not None and work.kind == "remote" else None
        home = self.work_copy.uri if self.work_copy is not None else self.dir
        self.checkpoint_dir = _location("--checkpoint-dir", opts.checkpoint_dir or f"{home}/checkpoints").uri
        self.model_dir = _location("--model-dir", opts.model_dir or f"{home}/model").uri
        self.log_dir = os.path.join(self.dir, "tensorboard")
        self.node_dir = os.path.join(self.dir, "nodes")
        self.zk: EmbeddedZooKeeper | None = None
        self.zk_hosts: str | None = None
        self.zk_auth: list | None = None
        self.client = None
        self.registry: AppRegistry | None = None
        self.spark = None
        self.owns_spark = False       # elearn built the session (and stops it), or it was the user's
        self.ops = None               # elearn.sparkops.SparkOps over the session
        self.class_cache = None       # the driver JVM's class-data archive (elearn.jvmcache)
        self.tensorboard = None
        self.files = None             # the driver's file service, when nodes run on other hosts
        self.work_mirror = None       # copies the application directory to --work-dir's URI
        self.py_paths: tuple = ()     # --py-files, on the driver's disk
        self.mount_marks: tuple = ()  # elearn.mounts.MountMark of each file:// location
        self.master = "local"
        self.threads: list[threading.Thread] = []
        self.timings: dict[str, float] = {}
        self._t0 = time.time()
        self._final_state = "failed"
        self._kill_checked = 0.0
        self._released = self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "Application":
        os.makedirs(self.dir, exist_ok=True)
        return self

    def start(self) -> None:
        """Check the cluster can run the nodes, then start ZooKeeper and Spark side by side (both
        take seconds), and TensorBoard if asked."""
        from concurrent.futures import ThreadPoolExecutor

        from pyspark import __version__ as pyspark_version

        from elearn.resources_profile import check_shape_support, check_shapes_fit
        from elearn.session import check_slots, default_master, running_session, with_environment

        opts, say = self.opts, self.console.say
        say(f"application {self.id} ({opts.mode} mode: {opts.ps} ps, {opts.workers} workers); "
            f"logs and state in {self.dir}")
        self.check_locations()
        existing = running_session(opts)
        if existing is not None:
            self.use_session(existing)
        else:
            self.master = opts.master or default_master(opts.ps + opts.workers, opts.max_restarts)
            conf = self.backend.spark_conf(opts, self.master, opts.conf, say)
            check_slots(self.master, opts.ps, opts.workers, conf)  # spark.task.cpus counts
            check_shapes_fit(opts, self.master, conf)
            conf = with_environment(opts, self.master, conf, say)
        with ThreadPoolExecutor(1, thread_name_prefix="elearn-zk") as pool:
            zk_started = pool.submit(self.start_zookeeper)
            try:
                if existing is None:
                    self.spark = self.build_session(conf)
                    self.owns_spark = True
            finally:
                zk_started.result()
        self.ops = SparkOps(self.spark)
        check_shape_support(opts, self.ops.can_shape(), pyspark_version)
        self.ops.watch_progress()
        if self.zk is not None:  # now that Spark has told which address the nodes reach us at
            say(f"ZooKeeper: embedded server at {self.zk_for_nodes()}"
                + ("" if self.single_host else " (it listens on every interface of this host)"))
        if not self.single_host:
            self.start_file_service()
        if self.work_copy is not None:
            self.start_work_copy()
        if opts.tensorboard:
            self.start_tensorboard()
        say(f"Spark {self.spark.version} on {self.master}" + (
            "" if self.owns_spark else " (the session already running here; it stays running)"))
        self.mark("spark")

    def build_session(self, conf: dict):
        """elearn's own SparkSession (stopped at the end): local or a cluster's, or a Spark Connect
        server's with ``--remote``."""
        from elearn.jvmcache import fresh_jvm_class_cache
        from elearn.session import build_session, connect_session
        from elearn.tfimport import stderr_to

        if self.opts.remote:
            return connect_session(self.opts.remote, self.id)
        # The JVM inherits this stderr for life: its start-up chatter and later Spark errors go
        # to spark.log in the application directory (--tf-log: the console).
        spark_log = None if self.opts.tf_log else os.path.join(self.dir, "spark.log")
        self.class_cache = fresh_jvm_class_cache(conf)
        with stderr_to(spark_log):
            spark = build_session(self.id, self.master, conf, quiet=not self.opts.tf_log,
                                  class_cache=self.class_cache)
        if self.class_cache is not None and self.class_cache.dumping:
            self.console.say("first start of this Spark on this machine: its driver JVM's classes "
                             f"are saved to {self.class_cache.path} at exit, to start faster next time")
        return spark

    def use_session(self, spark) -> None:
        """Run on a session that was there before (the user's, or ``spark=``): as it is. elearn
        checks it can run the nodes, marks its own jobs and cancels only those, and never stops it."""
        from elearn.session import check_slots, refuse_for_running_session

        self.spark, self.owns_spark = spark, False
        self.master = SparkOps(spark).master
        refuse_for_running_session(self.opts, self.master)
        conf = self.backend.spark_conf(self.opts, self.master, {}, self.console.say)
        check_slots(self.master, self.opts.ps, self.opts.workers, conf)

    def tag(self, what: str) -> str:
        """The tag of this application's Spark jobs for ``what`` (a node role, or pre_train)."""
        return f"elearn-{self.id}-{what}"

    def start_work_copy(self, every: float = 30.0) -> None:
        """Copy the application directory to ``--work-dir``'s URI now and then, and at the end,
        so an application can be inspected after its driver's host is gone. What only this
        driver needs (ZooKeeper's data, the application's secret, shipped code) stays here."""
        from elearn.runtime.mirror import Mirror
        from elearn.storage import open_storage

        self.work_mirror = Mirror(open_storage(self.work_copy), every=every).add(
            self.dir, "", skip=("zookeeper/*", "zk-secret", "shipped/*", "coordinator/*.pkl",
                                "coordinator/staging/*", "*/spool/*")).start()

    def finish_work_copy(self) -> None:
        """The last copy of the application directory, with its summary."""
        if self.work_mirror is not None:
            self.work_mirror.stop()

    def check_locations(self) -> None:
        """Every place the application writes to is writable, before Spark starts: a scheme this
        host cannot serve, a missing bucket or unreachable storage fails now, naming the fix."""
        from elearn.mounts import leave_mark
        from elearn.storage import check_location

        for flag, uri in (("--checkpoint-dir", self.checkpoint_dir), ("--model-dir", self.model_dir),
                          ("--work-dir", self.work_copy.uri if self.work_copy else self.dir)):
            location = check_location(uri, flag)
            if location.kind == "shared":  # the nodes check they see this very directory
                self.mount_marks += (leave_mark(flag, location, self.id),)

    def start_zookeeper(self) -> None:
        self.zk_auth, acl = app_credentials(os.path.join(self.dir, "zk-secret"))
        if self.opts.zk:
            self.zk_hosts = self.opts.zk
            self.client = connect(self.zk_hosts, timeout=15, auth_data=self.zk_auth)
            self.console.say(f"ZooKeeper: external ensemble {self.zk_hosts}")
        else:
            def restarted(n):
                self.console.say(f"embedded ZooKeeper died and was restarted ({n}); nodes reconnect")
                self.event("zookeeper_restart", count=n)

            self.zk = EmbeddedZooKeeper(os.path.join(self.dir, "zookeeper"), supervise=True,
                                        on_restart=restarted).start()
            self.zk_hosts = self.zk.hosts
            self.client = connect(self.zk_hosts, timeout=15, auth_data=self.zk_auth)
        self.registry = AppRegistry(self.client, self.id, acl=acl)
        self.registry.create()
        self._publish_running()

    def start_tensorboard(self) -> None:
        from elearn.tensorboard import TensorBoard

        self.tensorboard = TensorBoard(self.log_dir, os.path.join(self.dir, "tensorboard.log")).start()
        self.console.say(f"TensorBoard: {self.tensorboard.url} (logs in {self.log_dir})")

    @property
    def backend(self):
        """The mode's backend: its configuration and the hooks every shared part calls."""
        if self.opts.mode == "ps":
            from elearn.ps import PSBackend

            return PSBackend(self.opts.ps)
        from elearn.mpi import AllreduceBackend

        return AllreduceBackend(self.opts.workers, heartbeat_timeout=self.opts.heartbeat_timeout)

    @property
    def advertised_host(self) -> str:
        """The address other hosts reach this driver at: loopback when every node runs here; the
        Spark driver's (``spark.driver.host``, which executors already reach) on a cluster; over
        Spark Connect, the address routing to the server."""
        from elearn.hosts import advertise_host

        if self.single_host or os.environ.get("ELEARN_HOST"):
            return advertise_host(self.single_host)
        driver_host = self.ops.conf("spark.driver.host")
        if self.ops.remote:
            return advertise_host(False, towards=driver_host)
        return driver_host or advertise_host(False)

    def zk_for_nodes(self) -> str:
        """ZooKeeper as the nodes reach it: the embedded server listens on every interface, so
        nodes on other hosts reach it at the driver's address, the one Spark's executors use."""
        if self.zk is None or self.single_host:
            return self.zk_hosts
        return f"{self.advertised_host}:{self.zk.port}"

    def node_spec(self, plan, train=None):
        """What every node's Spark task needs (``elearn.specs.NodeSpec``)."""
        from elearn.specs import NodeSpec

        node_dir = self.node_dir if self.single_host else os.path.join(NODE_DIR, self.id)
        return NodeSpec(app_id=self.id, zk=self.zk_for_nodes(), zk_auth=tuple(map(tuple, self.zk_auth)),
                        node_dir=node_dir, same_host=self.single_host, backend=self.backend, plan=plan,
                        register_timeout=self.opts.register_timeout, feed_timeout=self.opts.feed_timeout,
                        max_restarts=self.opts.max_restarts, tf_log=self.opts.tf_log,
                        files=self.files_endpoint, app_dir=self.dir, train=train,
                        # Only a node that writes the locations itself checks it sees them.
                        mounts=self.mount_marks if train is not None and not self.single_host else (),
                        embedded_zk=self.zk is not None)

    def ship_code(self, job) -> None:
        """``--py-files`` and the job's own folder on every node's import path."""
        from elearn.pyfiles import bundle, import_roots, parse_py_files
        from elearn.shipping import job_paths

        paths = parse_py_files(self.opts.py_files)
        folders = job_paths(job)
        files = bundle(paths, folders[0] if folders and not self.single_host else None,
                       os.path.join(self.dir, "shipped"))
        if files:
            self.ops.add_py_files(files)
        self.py_paths = tuple(import_roots(paths))

    def train_spec(self, job, plan, on_driver_host: bool):
        """What the processes running ``train`` need (``elearn.specs.TrainSpec``);
        ``on_driver_host``: whether they run on this host."""
        from elearn.shipping import pack_job, job_paths
        from elearn.specs import TrainSpec

        return TrainSpec(job=pack_job(job), backend=self.backend, num_workers=self.opts.workers,
                         num_ps=self.opts.ps, plan=plan, checkpoint_dir=self.checkpoint_dir,
                         model_dir=self.model_dir, log_dir=self.log_dir, app_dir=self.dir,
                         fill=dict(self.opts.fill), sys_path=(*job_paths(job), *self.py_paths),
                         checkpoint_every=self.opts.checkpoint_every, on_driver_host=on_driver_host,
                         files=self.files_endpoint, tf_log=self.opts.tf_log)

    @property
    def files_endpoint(self):
        """How nodes on other hosts reach this driver's file service (None when all run here)."""
        return self.files.endpoint(self.advertised_host) if self.files is not None else None

    def start_file_service(self) -> None:
        """Serve the application directory and local checkpoint and model directories to nodes on
        other hosts: their logs, TensorBoard events, checkpoints and models come home through it."""
        from elearn.driverfs import DriverFiles, new_token

        roots = {"app": self.dir}
        for name, uri in (("checkpoints", self.checkpoint_dir), ("model", self.model_dir)):
            location = parse_location(uri)
            if location.kind == "local" and not location.path.startswith(self.dir + os.sep):
                os.makedirs(location.path, exist_ok=True)
                roots[name] = location.path
        self.files = DriverFiles(roots, new_token()).start()

    def share_coordination(self):
        """How the feed's map tasks reach this application's ZooKeeper to deal exact shares."""
        from elearn.shares import Coordination

        return Coordination(self.zk_for_nodes(), self.zk_auth, f"{self.registry.base}/shares")

    def check_killed(self) -> None:
        """Raise KilledError once ``pl_submit kill`` asked for it (checked at most once a second)."""
        now = time.monotonic()
        if self.registry is None or now - self._kill_checked < 1.0:
            return
        self._kill_checked = now
        try:
            request = self.registry.kill_requested()
        except Exception:
            return
        if request:
            raise KilledError(f"killed on request ({request.get('reason', 'pl_submit kill')})")

    # -- the local list of running applications (``pl_submit list/status/kill``) ----------------
    @property
    def running_file(self) -> str:
        return os.path.join(elearn_home(), "running", f"{self.id}.json")

    def _publish_running(self) -> None:
        os.makedirs(os.path.dirname(self.running_file), exist_ok=True)
        with open(self.running_file, "w") as f:
            json.dump({"app_id": self.id, "zk": self.zk_hosts, "pid": os.getpid(), "dir": self.dir,
                       "secret": os.path.join(self.dir, "zk-secret"), "started": self._t0,
                       "embedded_zk": self.zk is not None, "mode": self.opts.mode}, f)

    @property
    def single_host(self) -> bool:
        """Every node runs on this host: a local master of this process's Spark (or of a Spark
        Connect server on this host)."""
        from elearn.hosts import is_local_address

        if not (self.master.startswith("local") and not self.master.startswith("local-cluster")):
            return False
        return not (self.ops is not None and self.ops.remote) or \
            is_local_address(self.ops.conf("spark.driver.host") or "localhost")

    def run_user(self, what: str, fn, *args):
        """Call the user's code on the driver; its exception becomes a UserCodeError that keeps
        the traceback.

        ``pl_submit kill`` meanwhile cancels the code's Spark jobs, so a long ``pre_train`` or
        ``post_train`` stops at its current Spark action instead of running to its end.
        """
        with self._cancel_spark_on_kill(what) as killed, self._tagged(what):
            try:
                out = fn(*args)
            except Exception as exc:
                if killed.is_set():
                    raise KilledError(f"killed on request during {what} (its Spark jobs were "
                                      "cancelled)") from exc
                raise UserCodeError(f"{what} raised {exc.__class__.__name__}: {exc}") from exc
        if killed.is_set():
            raise KilledError(f"killed on request during {what}")
        return out

    def _tagged(self, what: str):
        return self.ops.tagged(self.tag(what)) if self.ops is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def _cancel_spark_on_kill(self, what: str, every: float = 0.5):
        """An Event set once a kill is requested; from then on, the Spark jobs ``what`` started
        are cancelled (again every ``every`` seconds: the user's code may start another) until the
        block ends. Other jobs of the session (the user's own) are left alone."""
        killed, done = threading.Event(), threading.Event()
        if self.registry is None or self.ops is None:
            yield killed
            return

        def keep_cancelling():
            while not done.is_set():
                self.ops.cancel(self.tag(what))
                done.wait(every)

        def on_change(data, _stat):
            if done.is_set():
                return False  # ends kazoo's watch
            if data is not None and not killed.is_set():
                killed.set()
                self.console.say("kill requested: cancelling the driver's Spark jobs")
                threading.Thread(target=keep_cancelling, name="elearn-kill", daemon=True).start()
            return None

        self.client.DataWatch(f"{self.registry.base}/kill", on_change)
        try:
            yield killed
        finally:
            done.set()

    def mark(self, phase: str) -> None:
        self.timings[phase] = round(time.time() - self._t0, 3)

    @property
    def events_path(self) -> str:
        return os.path.join(self.dir, "events.jsonl")

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.dir, "metrics.jsonl")

    def event(self, kind: str, **fields) -> None:
        append_record(self.events_path, kind, **fields)

    def succeeded(self) -> None:
        self._final_state = "done"

    def __exit__(self, *exc) -> None:
        self.close()

    def release_nodes(self, join_timeout: float = 30.0) -> None:
        """Mark the application final so the daemons stop their TF processes; wait for their jobs.

        Frees the Spark task slots the nodes held while keeping Spark itself up (``post_train``).
        """
        if self._released:
            return
        self._released = True
        if self.registry is not None:
            try:
                self.registry.set_state(self._final_state)
            except Exception:
                log.warning("could not mark the application %s in ZooKeeper", self._final_state)
        # After success the nodes stop by themselves and return their statistics; after a failure
        # some may never have started (no room): their jobs are cancelled after a short grace.
        deadline = time.monotonic() + (join_timeout if self._final_state == "done" else 3.0)
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self.threads if t.is_alive()]
        if self.ops is not None and alive:
            for t in alive:  # only this application's jobs: the session may be the user's
                self.ops.cancel(t.tag)
            for t in alive:
                t.join(10)

    def close(self, join_timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        t0 = time.monotonic()
        self.console.say("teardown: stopping the TF nodes" + (", Spark" if self.owns_spark else "")
                         + (" and ZooKeeper" if self.zk else ""))
        self.release_nodes(join_timeout)
        if self.registry is not None:
            try:
                self.registry.delete()
            except Exception:
                log.warning("could not remove the znodes of %s", self.id)
        if self.client is not None:
            try:
                self.client.stop()
                self.client.close()
            except Exception:
                pass
        if self.ops is not None:
            self.ops.close()
        if self.spark is not None and self.owns_spark:
            try:
                self.spark.stop()
            except Exception:
                pass
            if self.class_cache is not None:
                self.class_cache.finish(keep=self._final_state == "done")
        self.spark = None
        if self.zk is not None:
            self.zk.stop()
        if self.tensorboard is not None:
            self.tensorboard.stop()
        if self.files is not None:
            self.files.stop()
        try:
            os.remove(self.running_file)
        except OSError:
            pass
        for mark in self.mount_marks:
            mark.remove()
        spool = os.path.join(self.node_dir, "spool")
        shutil.rmtree(spool, ignore_errors=True)
        self.console.say(f"teardown done in {time.monotonic() - t0:.1f}s")
