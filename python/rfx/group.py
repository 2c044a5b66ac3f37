"""Group invocations: one function on several leases at once.

Instance ``r`` runs on ``leases[r]`` as rank ``r`` of a communicator of
them all: ``ctx.comm`` in a Python function ``def f(inp, ctx)``, the
``rfx_comm`` table in a native one::

    leases = tenant.lease_group(4)
    with rfx.Group(leases, python="train.py", functions=["step"]) as g:
        outs = g.invoke_all("step", b"")
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from . import _native
from .executor import _bytes_of

__all__ = ["Group"]


class Group:
    """The executors of ``leases``, connected as one group, serving the
    ``functions`` of ``library`` (a native library) or of ``python`` (a
    ``.py`` file, or a directory with ``module`` the one imported)."""

    def __init__(
        self,
        leases: Sequence[Any],
        library: str | None = None,
        functions: Iterable[str] = (),
        *,
        python: str | None = None,
        module: str | None = None,
        timeout_s: float = 30.0,
        hot: bool = True,
    ):
        if (library is None) == (python is None):
            raise ValueError("give either library= (native functions) or python= (a Python module)")
        natives = [getattr(lease, "_native", lease) for lease in leases]
        self._native = _native.Group(
            natives,
            str(library if python is None else python),
            list(functions),
            timeout_s,
            hot,
            True,
            python is not None,
            module,
        )

    @property
    def size(self) -> int:
        """Members (ranks) in the group."""
        return self._native.size

    def invoke(self, fn: str, inputs: Sequence[Any]) -> list[bytes]:
        """Runs ``fn`` on every member at once, rank ``r`` on ``inputs[r]``
        (any bytes-like objects); the outputs by rank. A failure of any
        member raises (after every member answered)."""
        if len(inputs) != self.size:
            raise ValueError(f"{len(inputs)} inputs for a group of {self.size}")
        return self._native.invoke(fn, [_bytes_of(x) for x in inputs])

    def invoke_all(self, fn: str, data: Any = b"") -> list[bytes]:
        """Runs ``fn`` on every member with the same input."""
        return self.invoke(fn, [data] * self.size)

    def close(self) -> None:
        """Disconnects from every member (the leases stay)."""
        self._native.close()

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
