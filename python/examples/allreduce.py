"""`rfx run -n 4 python3 python/examples/allreduce.py`: numpy arrays summed
across ranks, mpi4py style."""

import numpy as np

import rfx
from rfx.collectives import Communicator

comm = Communicator.from_env()
x = np.full(1 << 20, comm.rank, dtype=np.float64)
total = np.empty_like(x)
comm.Allreduce(x, total, op=rfx.SUM)
print(f"rank {comm.rank}/{comm.size}: {total[0]} (expected {sum(range(comm.size))})")
