"""One application's resources: its directories, ZooKeeper, registry, Spark session and events.

``Application`` is a context manager; leaving it tears everything down in the order that keeps
logs quiet and leaves nothing running: mark the application final in ZooKeeper (node tasks stop
their TF processes), wait for the Spark jobs to end, remove the znodes, stop Spark, stop ZooKeeper.
"""
from __future__ import annotations

import logging
import os
import shutil
import time

from elearn.backend import Backend
from elearn.cluster.hosts import advertise_host, is_local_address, listen_address
from elearn.cluster.registry import AppRegistry, Credentials
from elearn.cluster.zookeeper import EmbeddedZooKeeper, connect
from elearn.cluster.zookeeper import close as close_client
from elearn.driver.console import Console
from elearn.driver.handles import Handles, Journal
from elearn.driver.interrupts import Interrupts
from elearn.driver.jvmcache import fresh_jvm_class_cache
from elearn.driver.nodejobs import NodeJobs
from elearn.driver.options import SubmitOptions, elearn_home
from elearn.driver.pyfiles import ship_py_files
from elearn.driver.running import publish_running, unpublish_running
from elearn.driver.session import (build_session, check_slots, connect_session, default_master,
                                   refuse_for_running_session, running_session, with_environment)
from elearn.driver.shapes import check_shape_support, check_shapes_fit
from elearn.driver.sparkops import SparkOps, connect_takes_profile
from elearn.driver.tensorboard import TensorBoard
from elearn.errors import KilledError, StorageError
from elearn.feed.columns import FeedPlan
from elearn.feed.shares import Coordination
from elearn.specs import NodeSpec, TrainSpec
from elearn.storage.driverfs import DriverFiles, new_token
from elearn.storage.mirror import Mirror
from elearn.storage.mounts import leave_mark
from elearn.storage.stores import check_location, open_storage, parse_location
from elearn.train.shipping import job_paths, pack_job
from elearn.train.tfimport import stderr_to

log = logging.getLogger(__name__)

# Where nodes on other hosts keep their spools and logs, relative to their executor's working
# directory. Not a valid Python package name: a folder named like one ("elearn") in the working
# directory would shadow an editable install of elearn on the executor's import path.
NODE_DIR = "elearn-nodes"


def _location(flag: str, value: str):
    try:
        return parse_location(value)
    except StorageError as exc:
        raise StorageError(f"{flag}: {exc}") from None


class Application:
    def __init__(self, opts: SubmitOptions, backend: Backend, console: Console | None = None):
        self.opts = opts
        self.backend = backend  # the mode's configuration and hooks, chosen by submit
        self.id = opts.app_id()
        self.console = console or Console(opts.quiet)
        # Paths are made absolute, URIs kept (elearn.storage.stores). An application directory on object
        # storage or HDFS is kept here and copied there while the application runs and at its end.
        work = _location("--work-dir", opts.work_dir) if opts.work_dir else None
        root = work.path if work is not None and work.kind != "remote" else os.path.join(elearn_home(), "apps")
        self.dir = os.path.join(root, self.id)
        self.work_copy = work.join(self.id) if work is not None and work.kind == "remote" else None
        home = self.work_copy.uri if self.work_copy is not None else self.dir
        self.checkpoint_uri = _location("--checkpoint-dir", opts.checkpoint_dir or f"{home}/checkpoints").uri
        self.model_uri = _location("--model-dir", opts.model_dir or f"{home}/model").uri
        self.log_dir = os.path.join(self.dir, "tensorboard")
        self.node_dir = os.path.join(self.dir, "nodes")
        self.zk: EmbeddedZooKeeper | None = None
        self.zk_hosts: str | None = None
        self.credentials: Credentials | None = None
        self.client = None
        self.registry: AppRegistry | None = None
        self.spark = None
        self.owns_spark = False       # elearn built the session (and stops it), or it was the user's
        self.ops = None               # elearn.driver.sparkops.SparkOps over the session
        self.class_cache = None       # the driver JVM's class-data archive (elearn.driver.jvmcache)
        self.tensorboard = None
        self.files = None             # the driver's file service, when nodes run on other hosts
        self.work_mirror = None       # copies the application directory to --work-dir's URI
        self.py_paths: tuple = ()     # --py-files, on the driver's disk
        self.running_file: str | None = None  # this application in the host's list of running ones
        self.mount_marks: tuple = ()  # elearn.storage.mounts.MountMark of each file:// location
        self.master = "local"
        self.journal = Journal(self.dir)  # phases and events.jsonl
        self.jobs: NodeJobs | None = None  # the node jobs, once Spark and ZooKeeper are up
        self._final_state = "failed"
        self.interrupts = Interrupts()  # entered by submit for the run; checked by every wait
        self._kill_checked = 0.0
        self._released = self._closed = False
        self._checked = False
        self._spark_conf: dict = {}

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "Application":
        os.makedirs(self.dir, exist_ok=True)
        return self

    def check(self) -> None:
        """Every check that can refuse the options before anything starts: where the application
        writes, the session or master and its task slots, the executor shapes and the shipped
        environment (packed here if asked). No process is started; ``submit`` runs this before the
        application's directory is kept, so a refusal leaves nothing behind."""
        from pyspark import __version__ as pyspark_version

        opts, say = self.opts, self.console.say
        self.check_locations()
        existing = running_session(opts)
        if existing is not None:
            self.use_session(existing)
            check_shape_support(opts, SparkOps(existing).can_shape(), pyspark_version)
        else:
            self.master = opts.master or default_master(opts.ps + opts.workers, opts.max_restarts)
            conf = self.backend.spark_conf(opts, self.master, opts.conf, say)
            check_slots(self.master, opts.ps, opts.workers, conf)  # spark.task.cpus counts
            check_shapes_fit(opts, self.master, conf)
            check_shape_support(opts, not opts.remote or connect_takes_profile(), pyspark_version)
            self._spark_conf = with_environment(opts, self.master, conf, say)
        if opts.zk:  # an ensemble that does not answer refuses the run now, not once Spark is up
            probe = connect(opts.zk.partition("/")[0])
            probe.stop()
            probe.close()
        self._checked = True

    def start(self) -> None:
        """Check the cluster can run the nodes (unless ``check`` did), then start ZooKeeper and
        Spark side by side (both take seconds), and TensorBoard if asked."""
        from concurrent.futures import ThreadPoolExecutor

        opts, say = self.opts, self.console.say
        if not self._checked:
            self.check()
        say(f"application {self.id} ({opts.mode} mode: {opts.ps} ps, {opts.workers} workers); "
            f"logs and state in {self.dir}")
        with ThreadPoolExecutor(1, thread_name_prefix="elearn-zk") as pool:
            zk_started = pool.submit(self.start_zookeeper)
            try:
                if self.spark is None:
                    self.spark = self.build_session(self._spark_conf)
                    self.owns_spark = True
            finally:
                zk_started.result()
        self.ops = SparkOps(self.spark)
        self.jobs = NodeJobs(self.id, self.ops, self.registry, self.console)
        self.ops.watch_progress()
        if self.zk is not None:  # now that Spark has told which address the nodes reach us at
            say(f"ZooKeeper: embedded server at {self.zk_for_nodes()}")
        if not self.single_host:
            self.start_file_service()
        if self.work_copy is not None:
            self.start_work_copy()
        if opts.tensorboard:
            self.start_tensorboard()
        say(f"Spark {self.spark.version} on {self.master}" + (
            "" if self.owns_spark else " (the session already running here; it stays running)"))
        self.journal.mark("spark")

    def build_session(self, conf: dict):
        """elearn's own SparkSession (stopped at the end): local or a cluster's, or a Spark Connect
        server's with ``--remote``."""

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

        self.spark, self.owns_spark = spark, False
        self.master = SparkOps(spark).master
        refuse_for_running_session(self.opts, self.master)
        conf = self.backend.spark_conf(self.opts, self.master, {}, self.console.say)
        check_slots(self.master, self.opts.ps, self.opts.workers, conf)

    def start_work_copy(self, every: float = 30.0) -> None:
        """Copy the application directory to ``--work-dir``'s URI now and then, and at the end,
        so an application can be inspected after its driver's host is gone. What only this
        driver needs (ZooKeeper's data, the application's secret, shipped code) stays here."""

        self.work_mirror = Mirror(open_storage(self.work_copy), every=every).add(
            self.dir, "", skip=("zookeeper/*", "zk-secret", "shipped/*",
                                "coordinator/staging/*", "*/spool/*")).start()

    def finish_work_copy(self) -> None:
        """The last copy of the application directory, with its summary."""
        if self.work_mirror is not None:
            self.work_mirror.stop()

    def check_locations(self) -> None:
        """Every place the application writes to is writable, before Spark starts: a scheme this
        host cannot serve, a missing bucket or unreachable storage fails now, naming the fix."""

        for flag, uri in (("--checkpoint-dir", self.checkpoint_uri), ("--model-dir", self.model_uri),
                          ("--work-dir", self.work_copy.uri if self.work_copy else self.dir)):
            location = check_location(uri, flag)
            if location.kind == "shared":  # the nodes check they see this very directory
                self.mount_marks += (leave_mark(flag, location, self.id),)

    def start_zookeeper(self) -> None:
        self.credentials = Credentials.of_application(os.path.join(self.dir, "zk-secret"))
        if self.opts.zk:
            self.zk_hosts = self.opts.zk
            self.client = connect(self.zk_hosts, self.credentials)
            self.console.say(f"ZooKeeper: external ensemble {self.zk_hosts}")
        else:
            def restarted(n):
                self.console.say(f"embedded ZooKeeper died and was restarted ({n}); nodes reconnect")
                self.journal.event("zookeeper_restart", count=n)

            self.zk = EmbeddedZooKeeper(os.path.join(self.dir, "zookeeper"), supervise=True,
                                        on_restart=restarted, address=self.zk_listen_address()).start()
            self.zk_hosts = self.zk.hosts
            self.client = connect(self.zk_hosts, self.credentials)
        self.registry = AppRegistry(self.client, self.id, self.credentials)
        self.registry.create()
        self.running_file = publish_running(self.id, zk=self.zk_hosts, dir=self.dir,
                                            secret=os.path.join(self.dir, "zk-secret"),
                                            started=self.journal.started, embedded_zk=self.zk is not None,
                                            mode=self.opts.mode)

    def start_tensorboard(self) -> None:
        self.tensorboard = TensorBoard(self.log_dir, os.path.join(self.dir, "tensorboard.log")).start()
        self.console.say(f"TensorBoard: {self.tensorboard.url} (logs in {self.log_dir})")

    @property
    def advertised_host(self) -> str:
        """The address other hosts reach this driver at: loopback when every node runs here; the
        Spark driver's (``spark.driver.host``, which executors already reach) on a cluster; over
        Spark Connect, the address routing to the server."""

        if self.single_host or os.environ.get("ELEARN_HOST"):
            return advertise_host(self.single_host)
        driver_host = self.ops.conf("spark.driver.host")
        if self.ops.remote:
            return advertise_host(False, towards=driver_host)
        return driver_host or advertise_host(False)

    def zk_listen_address(self) -> str:
        """The one address the embedded ZooKeeper listens on (``hosts.listen_address``): loopback
        when every node runs on this host, else the address nodes on other hosts reach it at.
        Chosen before Spark starts (they start side by side), from the master, ``--remote`` and
        ``spark.driver.host``; a session that was there before is asked."""

        if self.spark is not None:  # the session already running in this process
            ops = SparkOps(self.spark)
            if ops.remote:
                return listen_address("", remote=f"sc://{ops.conf('spark.driver.host') or 'localhost'}")
            return listen_address(self.master, driver_host=ops.conf("spark.driver.host"))
        return listen_address(self.master, self.opts.remote, self.opts.conf.get("spark.driver.host"))

    def zk_for_nodes(self) -> str:
        """ZooKeeper as the nodes reach it: at the one address the embedded server listens on."""
        return self.zk_hosts

    def handles(self, job, plan: FeedPlan) -> Handles:
        """What the mode's ``drive`` works with (``elearn.driver.handles``): the specs of this
        job's nodes and training processes, and the application's handles."""
        on_driver_host = self.backend.trains_on_driver or self.single_host
        train = self._train_spec(job, plan, on_driver_host)
        nodes = self._node_spec(plan, train=None if self.backend.trains_on_driver else train)
        return Handles(opts=self.opts, app_id=self.id, app_dir=self.dir, node_dir=self.node_dir,
                       master=self.master, single_host=self.single_host,
                       advertised_host=self.advertised_host, console=self.console,
                       registry=self.registry, ops=self.ops, jobs=self.jobs, journal=self.journal,
                       check_killed=self.check_killed, node_spec=nodes, train_spec=train)

    def _node_spec(self, plan: FeedPlan, train: TrainSpec | None) -> NodeSpec:
        """What every node's Spark task needs; ``train``: what it runs as a training process."""
        node_dir = self.node_dir if self.single_host else os.path.join(NODE_DIR, self.id)
        return NodeSpec(app_id=self.id, zk=self.zk_for_nodes(), credentials=self.credentials,
                        node_dir=node_dir, same_host=self.single_host, backend=self.backend, plan=plan,
                        register_timeout=self.opts.register_timeout, feed_timeout=self.opts.feed_timeout,
                        max_restarts=self.opts.max_restarts, tf_log=self.opts.tf_log,
                        files=self.files_endpoint, app_dir=self.dir, train=train,
                        # Only a node that writes the locations itself checks it sees them.
                        mounts=self.mount_marks if train is not None and not self.single_host else (),
                        embedded_zk=self.zk is not None)

    def ship_code(self, job) -> None:
        """``--py-files`` and the job's own folder on every node's import path."""
        self.py_paths = ship_py_files(self.ops, self.opts.py_files, job_paths(job),
                                      os.path.join(self.dir, "shipped"), self.single_host)

    def _train_spec(self, job, plan: FeedPlan, on_driver_host: bool) -> TrainSpec:
        """What the processes running ``train`` need; ``on_driver_host``: whether they all run on
        this host."""
        return TrainSpec(job=pack_job(job), backend=self.backend, num_workers=self.opts.workers,
                         num_ps=self.opts.ps, plan=plan, checkpoint_uri=self.checkpoint_uri,
                         model_uri=self.model_uri, log_dir=self.log_dir, app_dir=self.dir,
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

        roots = {"app": self.dir}
        for name, uri in (("checkpoints", self.checkpoint_uri), ("model", self.model_uri)):
            location = parse_location(uri)
            if location.kind == "local" and not location.path.startswith(self.dir + os.sep):
                os.makedirs(location.path, exist_ok=True)
                roots[name] = location.path
        self.files = DriverFiles(roots, new_token()).start()

    def share_coordination(self):
        """How the feed's map tasks reach this application's ZooKeeper to deal exact shares."""

        return Coordination(self.zk_for_nodes(), self.credentials, f"{self.registry.base}/shares")

    def check_killed(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C came (its first raise may have been lost, see
        ``elearn.driver.interrupts``); KilledError once ``pl_submit kill`` asked for it (checked at
        most once a second)."""
        self.interrupts.check()
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
    def single_host(self) -> bool:
        """Every node runs on this host: a local master of this process's Spark (or of a Spark
        Connect server on this host)."""

        if not (self.master.startswith("local") and not self.master.startswith("local-cluster")):
            return False
        return not (self.ops is not None and self.ops.remote) or \
            is_local_address(self.ops.conf("spark.driver.host") or "localhost")

    def succeeded(self) -> None:
        self._final_state = "done"

    def __exit__(self, *exc) -> None:
        self.close()

    def release_nodes(self, join_timeout: float = 30.0) -> None:
        """Mark the application final so the node tasks stop their TF processes; wait for their jobs.

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
        if self.jobs is not None:
            self.jobs.release(join_timeout if self._final_state == "done" else 3.0)

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
            close_client(self.client)
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
        unpublish_running(self.running_file)
        for mark in self.mount_marks:
            mark.remove()
        spool = os.path.join(self.node_dir, "spool")
        shutil.rmtree(spool, ignore_errors=True)
        self.console.say(f"teardown done in {time.monotonic() - t0:.1f}s")
