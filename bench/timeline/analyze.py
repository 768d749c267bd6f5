"""One traced submit as a timeline: every process, its imports, its waits, and the critical path.

Three sources, all written during the run and read afterwards:

- the trace file the Python processes append to (``bringup_trace.py``, loaded through
  ``sitecustomize``): process starts, imports, spans of elearn's steps, events;
- a sample of ``/proc`` every 0.1 s (``ProcSampler``), for every process below pl_submit, Java
  included: start (exact, from ``/proc/PID/stat``), last seen alive, CPU seconds;
- Spark's event log (``spark.eventLog.enabled``): jobs, stages and tasks as the driver JVM saw them.

The critical path is walked back from the first training step: each milestone lists what it
waits for, and the one of those that came last is the one it waited on.
"""
from __future__ import annotations

import glob
import json
import os
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def _btime() -> float:
    with open("/proc/stat") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("btime"))


class ProcSampler(threading.Thread):
    """Every process below ``root_pid``: start, last seen, CPU seconds, command line."""

    def __init__(self, every: float = 0.1):
        super().__init__(name="proc-sampler", daemon=True)
        self.every, self.root, self.procs, self.offset = every, None, {}, 0.0
        self._halt = threading.Event()
        self.btime = _btime()

    def watch(self, pid: int, launched: float) -> None:
        """Follow ``pid`` and its descendants; ``launched``: ``time.time()`` just before it was
        spawned, which calibrates /proc's start times (boot time + ticks: whole seconds off)."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                ticks = int(f.read().rsplit(")", 1)[1].split()[19])
            self.offset = launched - (self.btime + ticks / TICK)
        except (OSError, ValueError):
            self.offset = 0.0
        self.root = pid

    def run(self) -> None:
        while not self._halt.is_set():
            if self.root is not None:
                self._sample()
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def _sample(self) -> None:
        now, stats = time.time(), {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                stats[int(entry)] = (int(fields[1]), int(fields[19]), int(fields[11]) + int(fields[12]))
            except (OSError, IndexError, ValueError):
                continue
        mine = {self.root}
        grew = True
        while grew:  # descendants of the root
            grew = False
            for pid, (ppid, _, _) in stats.items():
                if ppid in mine and pid not in mine:
                    mine.add(pid)
                    grew = True
        for pid in mine:
            if pid not in stats:
                continue
            ppid, start, cpu = stats[pid]
            p = self.procs.get(pid)
            if p is None or p["start_ticks"] != start:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    cmd = ""
                p = self.procs[pid] = {"pid": pid, "ppid": ppid, "start_ticks": start,
                                       "start": self.btime + start / TICK + self.offset, "cmd": cmd}
            try:  # a fork shows its parent's command line until it execs (a script, java)
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    p["cmd"] = f.read().replace(b"\0", b" ").decode(errors="replace").strip() or p["cmd"]
            except OSError:
                pass
            p["last"], p["cpu"] = now, cpu / TICK


# -- reading the sources ------------------------------------------------------------------------------

def read_trace(path: str) -> list[dict]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def read_event_log(folder: str) -> list[dict]:
    """Spark's jobs, stages and tasks as spans ``{"name", "t", "end", "what"}`` (seconds)."""
    files = [p for p in glob.glob(os.path.join(folder, "**"), recursive=True)
             if os.path.isfile(p) and not os.path.basename(p).startswith((".", "appstatus"))]
    if not files:
        return []
    jobs, stages, tasks, out = {}, {}, {}, []
    stage_job = {}
    with open(max(files, key=os.path.getsize)) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            kind = e.get("Event", "")
            if kind == "SparkListenerApplicationStart":
                out.append({"what": "spark", "name": "SparkContext: application start", "t": e["Timestamp"] / 1e3})
            elif kind == "SparkListenerJobStart":
                props = e.get("Properties") or {}
                desc = props.get("spark.job.description") or props.get("spark.job.tags") or ""
                jobs[e["Job ID"]] = {"t": e["Submission Time"] / 1e3, "desc": desc,
                                     "stages": [s["Stage ID"] for s in e.get("Stage Infos", [])]}
                for s in e.get("Stage Infos", []):
                    stage_job[s["Stage ID"]] = e["Job ID"]
            elif kind == "SparkListenerJobEnd":
                j = jobs.get(e["Job ID"])
                if j:
                    out.append({"what": "spark", "name": f"Spark job {e['Job ID']} {j['desc'][:60]}".rstrip(),
                                "t": j["t"], "end": e["Completion Time"] / 1e3})
            elif kind == "SparkListenerStageSubmitted":
                info = e["Stage Info"]
                stages[info["Stage ID"]] = {"t": info.get("Submission Time", 0) / 1e3, "name": info["Stage Name"],
                                            "tasks": info["Number of Tasks"]}
            elif kind == "SparkListenerStageCompleted":
                info = e["Stage Info"]
                s = stages.get(info["Stage ID"], {})
                name = (info.get("Stage Name") or s.get("name", "")).split(" at ")[0]
                out.append({"what": "spark", "name": f"stage {info['Stage ID']} ({info['Number of Tasks']} tasks, "
                                                     f"job {stage_job.get(info['Stage ID'], '?')}) {name}",
                            "t": info.get("Submission Time", 0) / 1e3, "end": info.get("Completion Time", 0) / 1e3})
            elif kind == "SparkListenerTaskEnd":
                info = e["Task Info"]
                out.append({"what": "spark", "name": f"task stage {e['Stage ID']}.{info['Index']}",
                            "t": info["Launch Time"] / 1e3, "end": info["Finish Time"] / 1e3})
    for sid, s in stages.items():  # stages still running at the end (the node stages until teardown)
        if not any(o["name"].startswith(f"stage {sid} ") for o in out):
            out.append({"what": "spark", "name": f"stage {sid} ({s['tasks']} tasks, job "
                                                 f"{stage_job.get(sid, '?')}) {s['name'].split(' at ')[0]}",
                        "t": s["t"]})
    return out


# -- naming processes -------------------------------------------------------------------------------

def name_processes(procs: dict, trace: list[dict]) -> dict:
    """pid -> a readable name (pl_submit, driver JVM, ZooKeeper JVM, TF server ps:0, ...)."""
    names = {}
    for pid, p in procs.items():
        cmd = p["cmd"]
        if "plsubmit" in cmd:
            names[pid] = "pl_submit"
        elif "ZooKeeperServerMain" in cmd:
            names[pid] = "ZooKeeper JVM"
        elif "java" in cmd.split(" ")[0] and "spark" in cmd:
            names[pid] = "driver JVM"
        elif "spark" in cmd:
            names[pid] = "spark-submit scripts"
        elif any(m in cmd for m in ("elearn.runtime.trainer", "elearn.train.trainer", "elearn.ps.coordinator")):
            names[pid] = "coordinator"
        elif "pyspark.daemon" in cmd:
            names[pid] = "pyspark daemon" if procs.get(p["ppid"], {}).get("cmd", "").find("pyspark.daemon") < 0 \
                else "Spark Python worker"
        elif "elearn.runtime.tf_server" in cmd:
            names[pid] = "TF server"
        else:
            names[pid] = cmd.split(" ")[0].rsplit("/", 1)[-1][:30] or f"pid {pid}"
    for rec in trace:  # what the processes said about themselves
        pid = rec["pid"]
        if rec["kind"] == "label":
            names[pid] = rec["name"]
        elif rec["kind"] == "proc" and rec.get("node"):
            node = json.loads(rec["node"])
            names[pid] = f"TF server {node['role']}:{node['index']}"
        elif rec["kind"] == "proc":  # its command line after exec: authoritative
            cmd = rec["name"]
            names[pid] = ("pl_submit" if "plsubmit" in cmd else
                          "coordinator" if any(m in cmd for m in ("runtime.trainer", "train.trainer", "ps.coordinator"))
                          else "pyspark daemon" if "pyspark.daemon" in cmd else cmd[:30])
    return names


# -- the timeline -------------------------------------------------------------------------------------

class Timeline:
    def __init__(self, t0: float, first_step: float | None, trace: list, procs: dict, spark: list,
                 offset: float = 0.0):
        self.t0, self.first_step = t0, first_step
        for rec in trace:  # process starts read from /proc: calibrated like the sampler's
            if rec["kind"] in ("proc", "fork") and rec.get("t"):
                rec["t"] += offset
        self.trace, self.procs, self.spark = trace, procs, spark
        self.names = name_processes(procs, trace)
        self.rows = self._rows()

    def _rows(self) -> list[dict]:
        rows = []
        seen_start = set()
        for pid, p in self.procs.items():
            rows.append({"t": p["start"], "proc": self.names.get(pid, str(pid)), "pid": pid, "what": "process start"})
            seen_start.add(pid)
        for rec in self.trace:
            pid, kind = rec["pid"], rec["kind"]
            proc = self.names.get(pid, str(pid))
            if kind == "proc":
                if pid not in seen_start and rec.get("t"):
                    rows.append({"t": rec["t"], "proc": proc, "pid": pid, "what": "process start"})
                rows.append({"t": rec["python_up"], "proc": proc, "pid": pid, "what": "Python up (site loaded)"})
            elif kind == "fork":
                if pid not in seen_start and rec.get("t"):
                    rows.append({"t": rec["t"], "proc": proc, "pid": pid, "what": "forked"})
            elif kind == "import":
                rows.append({"t": rec["t"], "end": rec["end"], "proc": proc, "pid": pid,
                             "what": f"import {rec['name']}"})
            elif kind in ("span", "event"):
                rows.append({"t": rec["t"], "end": rec.get("end"), "proc": proc, "pid": pid, "what": rec["name"]})
        for s in self.spark:
            rows.append({"t": s["t"], "end": s.get("end"), "proc": "driver JVM", "pid": None, "what": s["name"]})
        if self.first_step:
            rows.append({"t": self.first_step, "proc": "coordinator", "pid": None, "what": "FIRST STEP done"})
        return sorted(rows, key=lambda r: r["t"])

    # milestones: the first row matching, its end (or its time for events)
    def _find(self, proc_prefix: str | None, what_prefix: str, last: bool = False, start: bool = False):
        hits = [r for r in self.rows if r["what"].startswith(what_prefix)
                and (proc_prefix is None or r["proc"].startswith(proc_prefix))]
        if not hits:
            return None
        r = hits[-1] if last else hits[0]
        return r["t"] if start or r.get("end") is None else r["end"]

    def milestones(self) -> dict:
        f = self._find
        m = {"pl_submit started": self.t0}
        m["pl_submit: imports done, Application.start entered"] = f("pl_submit", "Application.start", start=True)
        m["ZooKeeper up"] = f("pl_submit", "EmbeddedZooKeeper.start")
        m["driver JVM started"] = f("driver JVM", "process start", start=True)
        m["SparkSession up"] = f("pl_submit", "session.build_session")
        m["Application.start done"] = f("pl_submit", "Application.start")
        m["pre_train + feed plan done"] = f("pl_submit", "submit._pre_train")
        m["coordinator process started"] = f("coordinator", "process start", start=True)
        m["node jobs submitted"] = f("pl_submit", "_launch node jobs")
        for node in self.nodes():
            m[f"{node}: Spark task started"] = f(f"node task {node}", "NodeTask.run", start=True)
            m[f"{node}: registered (znode)"] = f(f"node task {node}", f"announce {node} spooling")
            m[f"{node}: TF server process started"] = f(f"TF server {node}", "process start", start=True)
            m[f"{node}: TF imported"] = f(f"TF server {node}", "import tensorflow")
            m[f"{node}: spooled"] = f(f"node task {node}", f"NodeTask.spool {node}")
            m[f"{node}: reserved (spooled, waits for spec)"] = f(f"node task {node}", f"announce {node} reserved")
            m[f"{node}: spec received"] = f(f"node task {node}", f"wait_spec {node}")
            m[f"{node}: TF server listening"] = f(f"node task {node}", "wait_listening")
            m[f"{node}: running (znode)"] = f(f"node task {node}", f"update {node} running")
            m[f"{node}: PS reach checked"] = f(f"node task {node}", f"check_reach {node}")
        m["driver: all registered"] = f("pl_submit", "wait_for_nodes")
        m["driver: all spooled"] = f("pl_submit", "wait form_cluster.<locals>.spooled")
        m["driver: cluster spec published"] = f("pl_submit", "publish_cluster")
        m["driver: all TF servers running"] = f("pl_submit", "wait form_cluster.<locals>.running")
        m["driver: coordinator's peer probes done"] = f("pl_submit", "peer probes", last=True)
        m["driver: config handed to coordinator"] = f("pl_submit", "CoordinatorProcess.configure")
        m["coordinator: config read"] = f("coordinator", "trainer: config read")
        m["coordinator: TF imported"] = f("coordinator", "import tf_keras") or f("coordinator", "import tensorflow")
        m["coordinator: strategy built"] = f("coordinator", "build_strategy")
        m["coordinator: train() started"] = f("coordinator", "ctx.record train_start")
        m["coordinator: per-worker dataset created"] = f("coordinator", "create_per_worker_dataset")
        m["coordinator: first step scheduled (traced)"] = f("coordinator", "coordinator.schedule")
        m["pyspark daemon started"] = f("pyspark daemon", "process start", start=True)
        worker_starts = [f(f"node task {n}", "NodeTask.run", start=True) for n in self.nodes() if n.startswith("worker")]
        worker_starts = [t for t in worker_starts if t is not None]
        if worker_starts:
            ends = [r["end"] for r in self.rows if r["what"].startswith("stage ") and r.get("end")
                    and r["end"] <= min(worker_starts) + 0.5]
            if ends:
                m["Spark: stages before the worker node tasks done"] = max(ends)
        m["first step done"] = self.first_step
        return {k: v for k, v in m.items() if v is not None}

    def nodes(self) -> list[str]:
        found = sorted({r["proc"].split(" ")[-1] for r in self.rows if r["proc"].startswith("node task ")})
        return sorted(found, key=lambda n: (not n.startswith("ps"), n))

    def dependencies(self) -> dict:
        nodes = self.nodes()
        workers = [n for n in nodes if n.startswith("worker")]
        ps = [n for n in nodes if n.startswith("ps")]
        d = {
            "first step done": ["coordinator: first step scheduled (traced)", "coordinator: train() started"],
            "coordinator: first step scheduled (traced)": ["coordinator: per-worker dataset created"],
            "coordinator: per-worker dataset created": ["coordinator: train() started"],
            "Spark: stages before the worker node tasks done": ["node jobs submitted"],
            "coordinator: train() started": ["coordinator: strategy built"],
            "coordinator: strategy built": ["coordinator: TF imported", "coordinator: config read"],
            "coordinator: TF imported": ["coordinator: config read", "coordinator process started"],
            "coordinator: config read": ["driver: config handed to coordinator", "coordinator process started"],
            "driver: config handed to coordinator": ["driver: coordinator's peer probes done"],
            "driver: coordinator's peer probes done": ["driver: all TF servers running"],
            "driver: all TF servers running": [f"{n}: PS reach checked" for n in workers]
                                              + [f"{n}: running (znode)" for n in nodes],
            "driver: cluster spec published": ["driver: all spooled"],
            "driver: all spooled": [f"{n}: reserved (spooled, waits for spec)" for n in nodes]
                                   + ["driver: all registered"],
            "driver: all registered": [f"{n}: registered (znode)" for n in nodes],
            "coordinator process started": ["pre_train + feed plan done"],
            "pyspark daemon started": ["node jobs submitted"],
            "node jobs submitted": ["coordinator process started"],
            "pre_train + feed plan done": ["Application.start done"],
            "Application.start done": ["SparkSession up", "ZooKeeper up"],
            "SparkSession up": ["driver JVM started"],
            "driver JVM started": ["pl_submit: imports done, Application.start entered"],
            "ZooKeeper up": ["pl_submit: imports done, Application.start entered"],
            "pl_submit: imports done, Application.start entered": ["pl_submit started"],
        }
        for n in nodes:
            d[f"{n}: PS reach checked"] = [f"{p}: running (znode)" for p in ps] + [f"{n}: running (znode)"]
            d[f"{n}: running (znode)"] = [f"{n}: TF server listening"]
            d[f"{n}: TF server listening"] = [f"{n}: spec received", f"{n}: TF imported"]
            d[f"{n}: spec received"] = ["driver: cluster spec published", f"{n}: reserved (spooled, waits for spec)"]
            d[f"{n}: TF imported"] = [f"{n}: TF server process started"]
            d[f"{n}: TF server process started"] = [f"{n}: registered (znode)"]
            d[f"{n}: reserved (spooled, waits for spec)"] = [f"{n}: spooled", f"{n}: registered (znode)"]
            d[f"{n}: spooled"] = [f"{n}: registered (znode)"]
            d[f"{n}: registered (znode)"] = [f"{n}: Spark task started"]
            d[f"{n}: Spark task started"] = ["node jobs submitted", "pyspark daemon started"] + (
                ["Spark: stages before the worker node tasks done"] if n.startswith("worker") else [])
        return d

    def critical_path(self) -> list[tuple[str, float]]:
        m, deps = self.milestones(), self.dependencies()
        node = "first step done" if "first step done" in m else max(m, key=m.get)
        path = [(node, m[node])]
        while node in deps:
            preds = [p for p in deps[node] if p in m]
            if not preds:
                break
            node = max(preds, key=lambda p: m[p])
            path.append((node, m[node]))
        return path[::-1]

    # -- printing
    def rel(self, t: float | None) -> str:
        return "" if t is None else f"{t - self.t0:7.2f}"

    def process_table(self) -> list[str]:
        out = ["| process | pid | start s | Python up s | last seen s | CPU s | imports (s from submit, duration) |",
               "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        ups = {r["pid"]: r["python_up"] for r in self.trace if r["kind"] == "proc"}
        imports: dict = {}
        for r in self.trace:
            if r["kind"] == "import" and r["end"] - r["t"] >= 0.05:
                imports.setdefault(r["pid"], []).append(f"{r['name']} {r['t'] - self.t0:.1f}+{r['end'] - r['t']:.1f}")
        for pid, p in sorted(self.procs.items(), key=lambda kv: kv[1]["start"]):
            name = self.names.get(pid, str(pid))
            up = ups.get(pid)
            out.append(f"| {name} | {pid} | {p['start'] - self.t0:.2f} | {'' if up is None else f'{up - self.t0:.2f}'} | "
                       f"{p['last'] - self.t0:.2f} | {p['cpu']:.1f} | {', '.join(imports.get(pid, []))} |")
        return out

    def event_table(self, until: float | None = None, min_span: float = 0.02) -> list[str]:
        out = ["|   t s |   end s |  dur s | process | what |", "| ---: | ---: | ---: | --- | --- |"]
        for r in self.rows:
            if until is not None and r["t"] > until:
                break
            end = r.get("end")
            if end is not None and end - r["t"] < min_span and not r["what"].startswith(("wait", "peer")):
                continue
            if r["what"].startswith("task stage") and end is not None and end - r["t"] < 0.2:
                continue
            dur = f"{end - r['t']:6.2f}" if end is not None else ""
            out.append(f"| {self.rel(r['t'])} | {self.rel(end)} | {dur} | {r['proc']} | {r['what']} |")
        return out

    def path_table(self) -> list[str]:
        path = self.critical_path()
        out = ["| t s | + s | milestone (waits on the one above) |", "| ---: | ---: | --- |"]
        prev = None
        for name, t in path:
            out.append(f"| {t - self.t0:.2f} | {'' if prev is None else f'{t - prev:.2f}'} | {name} |")
            prev = t
        return out

    def report(self) -> str:
        lines = ["### Processes", "", *self.process_table(), "", "### Events up to the first step", "",
                 *self.event_table(until=(self.first_step or 1e18) + 0.01), "",
                 "### Critical path to the first step", "", *self.path_table(), "",
                 "### All milestones", "", "| t s | milestone |", "| ---: | --- |"]
        for name, t in sorted(self.milestones().items(), key=lambda kv: kv[1]):
            lines.append(f"| {t - self.t0:.2f} | {name} |")
        return "\n".join(lines)
