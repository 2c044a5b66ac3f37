"""Run by `rfx run -n N python3 check_collectives.py`: every operation of
rfx.collectives on numpy arrays, checked against numpy on every rank."""

import sys

import numpy as np

import rfx
from rfx.collectives import IN_PLACE, Communicator

comm = Communicator.from_env()
me, n = comm.rank, comm.size
assert comm.Get_rank() == me and comm.Get_size() == n

for dtype in (np.float64, np.float32, np.int64, np.int32, np.uint8):
    for count in (1, 7, 1000, 100_000):
        inputs = [
            (np.arange(count, dtype=np.int64) * (r + 1) % 97).astype(dtype) for r in range(n)
        ]
        mine = inputs[me]

        out = np.empty_like(mine)
        comm.Allreduce(mine, out, op=rfx.SUM)
        np.testing.assert_array_equal(out, sum(inputs).astype(dtype))

        buf = mine.copy()
        comm.Allreduce(IN_PLACE, buf, op=rfx.MAX)
        np.testing.assert_array_equal(buf, np.max(inputs, axis=0))

        red = np.zeros_like(mine)
        comm.Reduce(mine, red, op=rfx.MIN, root=n - 1)
        if me == n - 1:
            np.testing.assert_array_equal(red, np.min(inputs, axis=0))

        b = mine.copy() if me == 0 else np.zeros_like(mine)
        comm.Bcast(b, root=0)
        np.testing.assert_array_equal(b, inputs[0])

        g = np.zeros(n * count, dtype=dtype) if me == 0 else None
        comm.Gather(mine, g, root=0)
        if me == 0:
            np.testing.assert_array_equal(g, np.concatenate(inputs))

        ag = np.zeros(n * count, dtype=dtype)
        comm.Allgather(mine, ag)
        np.testing.assert_array_equal(ag, np.concatenate(inputs))

        whole = np.concatenate(inputs) if me == 0 else None
        part = np.zeros(count, dtype=dtype)
        comm.Scatter(whole, part, root=0)
        np.testing.assert_array_equal(part, inputs[me])

        send = np.concatenate([inputs[me] + k for k in range(n)]).astype(dtype)
        recv = np.zeros_like(send)
        comm.Alltoall(send, recv)
        want = np.concatenate([(inputs[k] + me).astype(dtype) for k in range(n)])
        np.testing.assert_array_equal(recv, want)

# Point to point, a ring; any source and tag.
right, left = (me + 1) % n, (me - 1) % n
x = np.full(50_000, me, dtype=np.float64)
y = np.empty_like(x)
if me % 2 == 0:
    comm.Send(x, right, tag=3)
    src, tag, got = comm.Recv(y, left, 3)
else:
    src, tag, got = comm.Recv(y, left, 3)
    comm.Send(x, right, tag=3)
assert (src, tag, got) == (left, 3, 50_000) and (y == left).all()
if me == 0:
    seen = set()
    for _ in range(n - 1):
        v = np.zeros(1, dtype=np.int32)
        src, tag, _ = comm.Recv(v)
        assert v[0] == src * 10 and tag == 7
        seen.add(src)
    assert seen == set(range(1, n))
else:
    comm.Send(np.array([me * 10], dtype=np.int32), 0, tag=7)

# Split and Dup.
half = comm.Split(me % 2, key=-me)
assert half is not None and half.size == len(range(me % 2, n, 2))
v = np.array([me], dtype=np.int64)
half.Allreduce(IN_PLACE, v, op=rfx.SUM)
assert v[0] == sum(range(me % 2, n, 2))
assert comm.Split(None) is None
d = comm.Dup()
z = np.ones(3, dtype=np.float64)
d.Allreduce(IN_PLACE, z)
assert (z == n).all()

# Bad input is an exception, not a crash.
try:
    comm.Allreduce(np.zeros(3, dtype=np.complex128), np.zeros(3, dtype=np.complex128))
except ValueError:
    pass
else:
    raise AssertionError("complex numbers have no rfx element type")
try:
    comm.Allgather(ag, ag)
except BufferError:
    pass
else:
    raise AssertionError("overlapping buffers were accepted")

comm.Barrier()
print(f"rank {me} of {n}: ok", flush=True)
sys.exit(0)
