"""What one call costs from Python, on one rank: rfx's `Allreduce` of 8 B
against mpi4py's and against numpy's `np.add(s, s, out=r)` on the same
one-element arrays (a C call that takes buffers), best of 5 runs of
200 000 calls. The floor of the Python layer of a small collective.

    rfx run -n 1 --bind-to-core python3 bench/python/call_floor.py rfx
    mpirun -n 1 --bind-to core python3 bench/python/call_floor.py mpi4py
"""

from __future__ import annotations

import sys
import time

import numpy as np

N = 200_000


def best_us(f, n: int = N) -> float:
    for _ in range(n // 10):
        f()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def main() -> int:
    s, r = np.ones(1), np.empty(1)
    if sys.argv[1:] == ["rfx"]:
        import rfx
        from rfx.collectives import Communicator

        c = Communicator.from_env()
        print(f"rfx rank (getter)     {best_us(lambda: c.rank):.3f} us")
        print(f"rfx Barrier           {best_us(c.Barrier):.3f} us")
        print(f"rfx Allreduce 8 B     {best_us(lambda: c.Allreduce(s, r, op=rfx.SUM)):.3f} us")
    elif sys.argv[1:] == ["mpi4py"]:
        from mpi4py import MPI

        c = MPI.COMM_WORLD
        print(f"mpi4py Get_rank       {best_us(c.Get_rank):.3f} us")
        print(f"mpi4py Barrier        {best_us(c.Barrier):.3f} us")
        print(f"mpi4py Allreduce 8 B  {best_us(lambda: c.Allreduce(s, r, op=MPI.SUM)):.3f} us")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"np.add(s, s, out=r)   {best_us(lambda: np.add(s, s, out=r)):.3f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
