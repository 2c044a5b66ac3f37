"""rfx from Python side by side with what Python users would pick instead,
on this machine, in one run.

    python3 bench/python/bench.py --json out/python.json

Frameworks: rfx.Executor (a C function of examples/functions on a leased
executor, over shm; and the same with a Python function run by the
executor's Python host), concurrent.futures.ProcessPoolExecutor, and, when
importable, Dask distributed (LocalCluster, client.submit), Ray (local
cluster, remote tasks and actor calls) and Parsl's HighThroughputExecutor
(the engine of Globus Compute endpoints). A framework that is not
installed is reported as skipped, never silently left out.

Workloads: a no-op task and a 4 KiB echo task. For each: latency one at a
time (p50, p99 over --iters calls after a warm-up), throughput with
--inflight tasks in flight (tasks/s over --tasks tasks), and time to the
first result from a cold start (framework start to first result, once).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

PAYLOAD = os.urandom(4096)


def noop(x: bytes) -> bytes:
    return b""


def echo(x: bytes) -> bytes:
    return x


def pct(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, round((len(s) - 1) * q))]


def measure(
    name: str,
    start: Callable[[], Any],
    call: Callable[[Any, str, bytes], Any],
    many: Callable[[Any, str, list[bytes]], list[Any]],
    stop: Callable[[Any], None],
    args: argparse.Namespace,
) -> list[dict]:
    rows = []
    t0 = time.perf_counter()
    ctx = start()
    call(ctx, "noop", b"")
    cold = time.perf_counter() - t0
    try:
        for task, data in (("noop", b""), ("echo", PAYLOAD)):
            for _ in range(args.warmup):
                call(ctx, task, data)
            lat = []
            for _ in range(args.iters):
                t = time.perf_counter()
                out = call(ctx, task, data)
                lat.append(time.perf_counter() - t)
            if task == "echo" and bytes(out) != data:
                raise AssertionError(f"{name}: echo returned other bytes")
            t = time.perf_counter()
            done = 0
            while done < args.tasks:
                k = min(args.inflight, args.tasks - done)
                many(ctx, task, [data] * k)
                done += k
            thr = args.tasks / (time.perf_counter() - t)
            rows.append(
                {
                    "framework": name,
                    "task": task,
                    "p50_us": pct(lat, 0.5) * 1e6,
                    "p99_us": pct(lat, 0.99) * 1e6,
                    "tasks_per_s": thr,
                    "cold_start_s": cold,
                }
            )
    finally:
        stop(ctx)
    return rows


# ----- rfx ------------------------------------------------------------------


PY_FUNCTIONS = """
def noop(inp):
    return None

def echo(inp):
    return inp
"""


def rfx_framework(python: bool = False):
    import tempfile

    import rfx

    def start():
        cluster = rfx.LocalCluster(python_host=True if python else None)
        lease = cluster.tenant("bench").lease(cores=1)
        # Off the leased core (busy-polling peers on one CPU crawl); put
        # back in stop, so that the other frameworks run unpinned.
        mask = os.sched_getaffinity(0)
        if len(mask) > 1:
            os.sched_setaffinity(0, mask - set(lease.cores) or mask)
        if python:
            d = tempfile.mkdtemp(prefix="rfx-bench-py-")
            path = os.path.join(d, "benchfns.py")
            with open(path, "w") as f:
                f.write(PY_FUNCTIONS)
            ex = rfx.Executor(lease, python=path, functions=["noop", "echo"])
        else:
            ex = rfx.Executor(lease, rfx.example_library(), ["noop", "echo"])
        return cluster, lease, ex, mask

    def call(ctx, task, data):
        return ctx[2].submit(task, data).result()

    def many(ctx, task, datas):
        return [f.result() for f in [ctx[2].submit(task, d) for d in datas]]

    def stop(ctx):
        cluster, lease, ex, mask = ctx
        ex.shutdown()
        lease.release()
        cluster.close()
        os.sched_setaffinity(0, mask)

    kind = "Python" if python else "C"
    return f"rfx.Executor ({kind} function, shm)", start, call, many, stop


def rfx_python():
    return rfx_framework(python=True)


# ----- concurrent.futures ---------------------------------------------------


def process_pool():
    fns = {"noop": noop, "echo": echo}

    def start():
        return cf.ProcessPoolExecutor(max_workers=1)

    def call(ex, task, data):
        return ex.submit(fns[task], data).result()

    def many(ex, task, datas):
        return list(ex.map(fns[task], datas))

    return "ProcessPoolExecutor", start, call, many, lambda ex: ex.shutdown()


# ----- Dask -----------------------------------------------------------------


def dask_framework():
    from dask.distributed import Client, LocalCluster

    fns = {"noop": noop, "echo": echo}

    def start():
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return cluster, Client(cluster)

    def call(ctx, task, data):
        return ctx[1].submit(fns[task], data, pure=False).result()

    def many(ctx, task, datas):
        return ctx[1].gather([ctx[1].submit(fns[task], d, pure=False) for d in datas])

    def stop(ctx):
        ctx[1].close()
        ctx[0].close()

    return "Dask distributed (client.submit)", start, call, many, stop


# ----- Ray ------------------------------------------------------------------


def ray_tasks():
    import ray

    def start():
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

        @ray.remote
        def rnoop(x):
            return b""

        @ray.remote
        def recho(x):
            return x

        return {"noop": rnoop, "echo": recho}

    def call(fns, task, data):
        return ray.get(fns[task].remote(data))

    def many(fns, task, datas):
        return ray.get([fns[task].remote(d) for d in datas])

    return "Ray (remote tasks)", start, call, many, lambda _: ray.shutdown()


def ray_actor():
    import ray

    def start():
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

        @ray.remote
        class Worker:
            def noop(self, x):
                return b""

            def echo(self, x):
                return x

        return Worker.remote()

    def call(w, task, data):
        return ray.get(getattr(w, task).remote(data))

    def many(w, task, datas):
        return ray.get([getattr(w, task).remote(d) for d in datas])

    return "Ray (actor method calls)", start, call, many, lambda _: ray.shutdown()


# ----- Parsl ----------------------------------------------------------------


def parsl_htex():
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    def start():
        # Parsl starts its interchange as a script of this environment.
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
        cfg = Config(
            executors=[
                HighThroughputExecutor(
                    label="htex", max_workers_per_node=1,
                    provider=LocalProvider(init_blocks=1, max_blocks=1),
                )
            ]
        )
        dfk = parsl.load(cfg)

        @parsl.python_app
        def pnoop(x):
            return b""

        @parsl.python_app
        def pecho(x):
            return x

        return dfk, {"noop": pnoop, "echo": pecho}

    def call(ctx, task, data):
        return ctx[1][task](data).result()

    def many(ctx, task, datas):
        return [f.result() for f in [ctx[1][task](d) for d in datas]]

    def stop(ctx):
        ctx[0].cleanup()
        parsl.clear()

    return "Parsl HighThroughputExecutor", start, call, many, stop


FRAMEWORKS = {
    "rfx": rfx_framework,
    "rfx-py": rfx_python,
    "processpool": process_pool,
    "dask": dask_framework,
    "ray-tasks": ray_tasks,
    "ray-actor": ray_actor,
    "parsl": parsl_htex,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--inflight", type=int, default=256)
    ap.add_argument("--json", help="write the rows and what was skipped here")
    args = ap.parse_args()
    rows, skipped = [], {}
    for key in args.frameworks.split(","):
        try:
            fw = FRAMEWORKS[key]()
        except ImportError as e:
            skipped[key] = f"not installed: {e}"
            print(f"{key}: skipped ({skipped[key]})", file=sys.stderr)
            continue
        name = fw[0]
        # Slow frameworks get fewer iterations, scaled so a run stays short.
        a = argparse.Namespace(**vars(args))
        if not key.startswith("rfx"):
            a.iters, a.warmup, a.tasks = max(200, args.iters // 10), 20, max(1000, args.tasks // 10)
        print(f"{name} ...", file=sys.stderr)
        try:
            rows += measure(name, *fw[1:], a)
        except Exception as e:  # a framework that fails here is reported, not hidden
            skipped[key] = f"failed: {type(e).__name__}: {e}"
            print(f"{key}: {skipped[key]}", file=sys.stderr)
    hdr = f"{'framework':34} {'task':5} {'p50 us':>10} {'p99 us':>10} {'tasks/s':>11} {'cold s':>7}"
    print(hdr)
    for r in rows:
        print(
            f"{r['framework']:34} {r['task']:5} {r['p50_us']:10.1f} {r['p99_us']:10.1f} "
            f"{r['tasks_per_s']:11.0f} {r['cold_start_s']:7.2f}"
        )
    for r in (x for x in rows if x["framework"].startswith("rfx")):
        task = r["task"]
        others = [x for x in rows if x["task"] == task and not x["framework"].startswith("rfx")]
        if others:
            best_lat = min(others, key=lambda x: x["p50_us"])
            best_thr = max(others, key=lambda x: x["tasks_per_s"])
            print(
                f"{r['framework']} {task}: p50 {best_lat['p50_us'] / r['p50_us']:.0f}x lower than "
                f"{best_lat['framework']}, throughput {r['tasks_per_s'] / best_thr['tasks_per_s']:.1f}x "
                f"{best_thr['framework']}"
            )
    by = {(r["framework"].split(" (")[1].split()[0], r["task"]): r for r in rows if r["framework"].startswith("rfx")}
    for task in ("noop", "echo"):
        c, p = by.get(("C", task)), by.get(("Python", task))
        if c and p:
            print(f"{task}: a Python function's p50 is {p['p50_us'] - c['p50_us']:+.1f} us beside the C function's")
    for k, why in skipped.items():
        print(f"skipped {k}: {why}")
    if args.json:
        meta = {"python": sys.version.split()[0], "machine": platform.machine(),
                "cpus": os.cpu_count(), "iters": args.iters, "tasks": args.tasks,
                "inflight": args.inflight}
        with open(args.json, "w") as f:
            json.dump({"bench": "python", "meta": meta, "rows": rows, "skipped": skipped}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
