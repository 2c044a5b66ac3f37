"""The Python allreduce of rfx against mpi4py on Open MPI, by OSU's method
(each call timed alone, an untimed barrier between calls, the mean of the
per-rank means), float64 arrays of 8 B to 1 MiB, ranks pinned.

    python3 bench/python/allreduce.py --json out/python-allreduce.json

runs itself twice: under `rfx run -n N --bind-to-core` with rfx.collectives
and under `mpirun -n N --bind-to core` with mpi4py (pip install mpi4py,
built against Open MPI's mpicc), then prints both with the ratio. With
--rust it adds `rfx-bench coll --ops allreduce` (rfx's Rust allreduce, the
same method) for the Python layer's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

SIZES = [8, 64, 512, 4096, 32768, 262144, 1048576]


def iters_for(size: int) -> int:
    return 2000 if size <= 8192 else 300 if size <= 262144 else 60


def rank_main(impl: str) -> None:
    import numpy as np

    if impl == "rfx":
        import rfx
        from rfx.collectives import Communicator

        comm = Communicator.from_env()
        allreduce = lambda s, r: comm.Allreduce(s, r, op=rfx.SUM)  # noqa: E731
        barrier = comm.Barrier
        rank, size = comm.rank, comm.size

        def mean(x: float) -> float:
            v = np.array([x])
            comm.Allreduce(rfx.collectives.IN_PLACE, v, op=rfx.SUM)
            return v[0] / size
    else:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        allreduce = lambda s, r: comm.Allreduce(s, r, op=MPI.SUM)  # noqa: E731
        barrier = comm.Barrier
        rank, size = comm.Get_rank(), comm.Get_size()

        def mean(x: float) -> float:
            return comm.allreduce(x, op=MPI.SUM) / size

    out = []
    for nbytes in SIZES:
        n = nbytes // 8
        s = np.full(n, float(rank + 1))
        r = np.empty_like(s)
        it = iters_for(nbytes)
        for _ in range(it // 10):
            allreduce(s, r)
            barrier()
        timed = 0.0
        for _ in range(it):
            t = time.perf_counter()
            allreduce(s, r)
            timed += time.perf_counter() - t
            barrier()
        assert r[0] == size * (size + 1) / 2
        out.append({"size": nbytes, "avg_us": mean(timed / it * 1e6)})
    if rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def run(cmd: list[str], env: dict) -> list[dict]:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")


def driver(args: argparse.Namespace) -> int:
    import rfx

    me = os.path.abspath(__file__)
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    n = str(args.ranks)
    rows = {}
    rows["rfx"] = run(
        [rfx.find_rfx(), "run", "-n", n, "--bind-to-core", sys.executable, me, "--rank", "rfx"], env
    )
    # Open MPI's (mpi4py is built with its mpicc); a venv may put MPICH's first.
    mpirun = args.mpirun or ("/usr/bin/mpirun" if os.path.exists("/usr/bin/mpirun") else None) \
        or shutil.which("mpirun") or "mpirun"
    try:
        rows["mpi4py"] = run(
            [mpirun, "--allow-run-as-root", "-n", n, "--bind-to", "core", "--mca", "btl",
             "self,vader", sys.executable, me, "--rank", "mpi4py"],
            env,
        )
    except (RuntimeError, FileNotFoundError) as e:
        print(f"mpi4py: skipped ({e})", file=sys.stderr)
    if args.rust:
        bench = os.path.join(rfx._native.SOURCE_DIR, "target", "release", "rfx-bench")
        r = subprocess.run(
            [bench, "coll", "--ops", "allreduce", "--ranks", n, "--sizes",
             ",".join(map(str, SIZES)), "--json", "-"],
            capture_output=True, text=True, timeout=600,
        )
        pts = json.loads(r.stdout)["rows"]
        rows["rust"] = [{"size": p["size"], "avg_us": p["rfx_avg_us"]} for p in pts]
    print(f"{'size':>8} {'rfx py us':>10} {'mpi4py us':>10} {'x mpi4py':>9}"
          + (f" {'rust us':>8} {'py/rust':>8}" if "rust" in rows else ""))
    for i, size in enumerate(SIZES):
        a = rows["rfx"][i]["avg_us"]
        line = f"{size:8d} {a:10.2f}"
        if "mpi4py" in rows:
            b = rows["mpi4py"][i]["avg_us"]
            line += f" {b:10.2f} {a / b:9.2f}"
        if "rust" in rows:
            c = rows["rust"][i]["avg_us"]
            line += f" {c:8.2f} {a / c:8.2f}"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bench": "python-allreduce", "ranks": args.ranks, "rows": rows}, f, indent=1)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rank", choices=["rfx", "mpi4py"], help=argparse.SUPPRESS)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--mpirun", help="Open MPI's mpirun (default: on PATH)")
    ap.add_argument("--rust", action="store_true", help="also rfx-bench coll --ops allreduce")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.rank:
        rank_main(args.rank)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
