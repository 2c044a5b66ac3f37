"""The communicator from Python, with mpi4py's names where they fit.

A program started by ``rfx run -n 4 python3 prog.py`` (or srun, mpirun)
joins its job with :meth:`Communicator.from_env`::

    import numpy as np
    from rfx.collectives import Communicator
    import rfx

    comm = Communicator.from_env()
    x = np.full(1000, comm.rank, dtype=np.float64)
    total = np.empty_like(x)
    comm.Allreduce(x, total, op=rfx.SUM)

Buffers are numpy arrays or any C-contiguous buffer (``array.array``,
``bytearray``); the element type comes from the buffer's format (float64,
float32, int8-64, uint8-64). They are used in place: no copies beyond the
transport's. Another Python thread must not touch a buffer during a call
on it (as with mpi4py).
"""

from __future__ import annotations

from typing import Any

from . import _native

__all__ = ["Communicator", "IN_PLACE"]


class _InPlace:
    def __repr__(self) -> str:
        return "rfx.collectives.IN_PLACE"


IN_PLACE = _InPlace()
"""Pass as the send buffer: the receive buffer holds the input (MPI_IN_PLACE)."""
_native.set_in_place(IN_PLACE)


def _copy(dst: Any, src: Any) -> None:
    d, s = memoryview(dst).cast("B"), memoryview(src).cast("B")
    if len(d) != len(s):
        raise ValueError(f"buffers of {len(s)} and {len(d)} bytes")
    d[:] = s


def _scratch(buf: Any) -> Any:
    """A writable copy of ``buf`` of the same type."""
    try:
        return buf.copy()  # numpy
    except AttributeError:
        fmt = memoryview(buf).format.lstrip("<=@!")
        return bytearray(memoryview(buf).cast("B")) if fmt in ("B", "c") else type(buf)(buf)


class Communicator:
    """The ranks of a job. ``rank``/``size`` (or ``Get_rank()``/``Get_size()``)
    say where this process is; every operation is collective unless it is
    a send or a receive."""

    def __init__(self, native: Any):
        self._c = native
        # The native Allreduce, where there is one, as this instance's own:
        # the same semantics without a Python frame per call.
        fast = getattr(native, "Allreduce", None)
        if fast is not None:
            self.Allreduce = fast

    @classmethod
    def from_env(cls) -> "Communicator":
        """Joins the job described by the environment (``RFX_RANK``,
        ``RFX_SIZE``, ``RFX_RENDEZVOUS`` ..., or Slurm's, Open MPI's or
        PMI's variables)."""
        return cls(_native.Communicator.from_env())

    @property
    def rank(self) -> int:
        return self._c.rank

    @property
    def size(self) -> int:
        return self._c.size

    def Get_rank(self) -> int:
        return self._c.rank

    def Get_size(self) -> int:
        return self._c.size

    # ----- point to point ---------------------------------------------------

    def Send(self, buf: Any, dest: int, tag: int = 0) -> None:
        """Sends ``buf`` to rank ``dest``."""
        self._c.send(buf, dest, tag)

    def Recv(self, buf: Any, source: int | None = None, tag: int | None = None) -> tuple[int, int, int]:
        """Receives into ``buf`` from ``source`` (any if None) with ``tag``
        (any if None); returns (source, tag, items received)."""
        return self._c.recv(buf, source, tag)

    # ----- collectives ------------------------------------------------------

    def Barrier(self) -> None:
        self._c.barrier()

    def Bcast(self, buf: Any, root: int = 0) -> None:
        """``root``'s ``buf`` into every rank's."""
        self._c.bcast(buf, root)

    def Reduce(self, sendbuf: Any, recvbuf: Any, op: str = "sum", root: int = 0) -> None:
        """The reduction of every rank's ``sendbuf`` into ``root``'s
        ``recvbuf`` (``sendbuf=IN_PLACE`` at the root: ``recvbuf`` holds
        its input)."""
        if self.rank == root:
            if sendbuf is not IN_PLACE:
                _copy(recvbuf, sendbuf)
            self._c.reduce(recvbuf, op, root)
        else:
            work = _scratch(recvbuf if sendbuf is IN_PLACE else sendbuf)
            self._c.reduce(work, op, root)

    def Allreduce(self, sendbuf: Any, recvbuf: Any, op: str = "sum") -> None:
        """The reduction of every rank's ``sendbuf`` into every ``recvbuf``
        (``sendbuf=IN_PLACE``: ``recvbuf`` holds the input)."""
        self._c.allreduce(None if sendbuf is IN_PLACE else sendbuf, recvbuf, op)

    def Gather(self, sendbuf: Any, recvbuf: Any | None, root: int = 0) -> None:
        """Every rank's ``sendbuf`` into ``root``'s ``recvbuf``, in rank order."""
        self._c.gather(sendbuf, recvbuf if self.rank == root else None, root)

    def Scatter(self, sendbuf: Any | None, recvbuf: Any, root: int = 0) -> None:
        """Block i of ``root``'s ``sendbuf`` into rank i's ``recvbuf``."""
        self._c.scatter(sendbuf if self.rank == root else None, recvbuf, root)

    def Allgather(self, sendbuf: Any, recvbuf: Any) -> None:
        """Every rank's ``sendbuf`` into every ``recvbuf``, in rank order."""
        self._c.allgather(sendbuf, recvbuf)

    def Alltoall(self, sendbuf: Any, recvbuf: Any) -> None:
        """Block i of each rank's ``sendbuf`` into block r of rank i's ``recvbuf``."""
        self._c.alltoall(sendbuf, recvbuf)

    # ----- communicators ----------------------------------------------------

    def Split(self, color: int | None, key: int = 0) -> "Communicator | None":
        """The ranks of equal ``color``, ordered by ``key`` (then rank);
        ``None`` for a rank that passed ``color=None``."""
        c = self._c.split(color, key)
        return None if c is None else Communicator(c)

    def Dup(self) -> "Communicator":
        """The same ranks, traffic apart from this communicator's."""
        return Communicator(self._c.dup())
