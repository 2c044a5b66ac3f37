"""rfx from Python: lease executor slots, invoke functions on them with
``concurrent.futures`` futures, and run MPI-like collectives on numpy
arrays.

>>> import rfx
>>> with rfx.LocalCluster() as cluster:                      # doctest: +SKIP
...     tenant = cluster.tenant("alice")
...     with tenant.lease(cores=1) as lease, rfx.Executor(lease, rfx.example_library()) as ex:
...         print(ex.submit("echo", b"hello").result())
b'hello'

The pieces: :class:`LocalCluster` (a lease manager and executor managers
on this host), :class:`Tenant` and :class:`Lease` (the lease manager's
side), :class:`Executor` (invocations as futures), and
:mod:`rfx.collectives` (the communicator). Errors are exceptions under
:class:`RfxError`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import _native
from ._native import (
    ClusterError,
    ExecutorGone,
    ExecutorRestarted,
    FunctionFailed,
    FunctionTimedOut,
    LeaseEnded,
    LeaseError,
    PayloadTooLarge,
    PeerGone,
    RfxError,
    TimedOut,
    UnknownFunction,
)
from .executor import Executor, RetryPolicy
from .group import Group

__all__ = [
    "LocalCluster",
    "Tenant",
    "Lease",
    "Executor",
    "example_library",
    "find_rfx",
    "find_python_host",
    "Group",
    "RfxError",
    "LeaseError",
    "LeaseEnded",
    "FunctionFailed",
    "UnknownFunction",
    "PayloadTooLarge",
    "ExecutorGone",
    "ExecutorRestarted",
    "TimedOut",
    "FunctionTimedOut",
    "RetryPolicy",
    "PeerGone",
    "ClusterError",
    "SUM",
    "PROD",
    "MIN",
    "MAX",
    "BAND",
    "BOR",
    "BXOR",
]

__version__ = _native.__version__

# Reductions, by the names the communicator takes (mpi4py's MPI.SUM...).
SUM = "sum"
PROD = "prod"
MIN = "min"
MAX = "max"
BAND = "band"
BOR = "bor"
BXOR = "bxor"

_REPO = Path(_native.SOURCE_DIR)


def find_rfx(build: bool = True) -> str:
    """The ``rfx`` binary: ``$RFX_BIN``, then ``rfx`` on ``PATH``, then the
    source tree's ``target/release/rfx`` (built with cargo if missing and
    ``build``)."""
    env = os.environ.get("RFX_BIN")
    if env:
        return env
    on_path = shutil.which("rfx")
    if on_path:
        return on_path
    built = _REPO / "target" / "release" / "rfx"
    if built.exists():
        return str(built)
    if build and (_REPO / "Cargo.toml").exists() and shutil.which("cargo"):
        subprocess.run(
            ["cargo", "build", "--release", "--bin", "rfx"], cwd=_REPO, check=True
        )
        return str(built)
    raise ClusterError(
        "no rfx binary: set RFX_BIN, put rfx on PATH, or build it with "
        "`cargo build --release` in the rfx source tree"
    )


def find_python_host(rfx_bin: str | None = None, build: bool = True) -> str | None:
    """The Python host that runs Python functions in executors
    (``librfx_pyhost.so``): ``$RFX_PYTHON_HOST``, then the one next to the
    ``rfx`` binary, then (``build``) one built with cargo from the source
    tree for this interpreter (``sys.executable``: functions then see its
    packages). None if there is none."""
    env = os.environ.get("RFX_PYTHON_HOST")
    if env:
        return env
    beside = Path(rfx_bin or find_rfx(build=False)).resolve().parent / "librfx_pyhost.so"
    if beside.exists():
        return str(beside)
    manifest = _REPO / "python" / "host" / "Cargo.toml"
    if build and manifest.exists() and shutil.which("cargo"):
        target = _REPO / "target"
        subprocess.run(
            ["cargo", "build", "--release", "--manifest-path", str(manifest)],
            env=dict(os.environ, PYO3_PYTHON=sys.executable, CARGO_TARGET_DIR=str(target)),
            check=True,
        )
        return str(target / "release" / "librfx_pyhost.so")
    return None


def example_library() -> str:
    """The example functions (``noop``, ``echo``, ``sum_f64``, ``crash``,
    ``panics`` ...), built from the source tree with cargo if needed."""
    return str(_native.example_library())


class Lease:
    """A granted lease. Use as a context manager to release it on exit."""

    def __init__(self, native: Any, tenant: "Tenant", request: dict | None = None):
        self._native = native
        self._tenant = tenant
        self._request = request or {}

    def renewed(self) -> "Lease":
        """A fresh lease of the same tenant, asked for as this one was (an
        executor's retries move to it after this one's executor died)."""
        return self._tenant.lease(**self._request)

    @property
    def id(self) -> int:
        """The lease's id."""
        return self._native.id

    @property
    def cores(self) -> list[int]:
        """The host's cores the lease holds."""
        return self._native.cores

    @property
    def executor(self) -> str:
        """``host:port`` of the lease's executor."""
        return self._native.executor

    def usage(self) -> dict[str, int]:
        """What the lease used so far (core-ms, invocations, bytes ...)."""
        return json.loads(self._native.usage_json())

    def release(self) -> dict[str, int] | None:
        """Ends the lease; its usage the first time, ``None`` after."""
        u = self._native.release()
        return None if u is None else json.loads(u)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release()
        except LeaseEnded:
            # Lost with its executor (that error, if any, is on its way up).
            pass

    def __repr__(self) -> str:
        return f"<rfx.Lease {self.id} cores={self.cores}>"


class Tenant:
    """A tenant connected to a lease manager (``host:port``) with its token."""

    def __init__(self, lease_manager: str, token: str, *, _native_tenant: Any = None):
        self._native = _native_tenant or _native.Tenant(lease_manager, token)
        self.lease_manager = lease_manager

    def lease(
        self,
        cores: int = 1,
        duration_s: float = 600.0,
        memory_mib: int | None = None,
        hot_timeout_ms: int | None = None,
        wait_s: float | None = None,
    ) -> Lease:
        """Leases ``cores`` cores for ``duration_s`` seconds; returns once
        the lease's executor listens. With ``wait_s``, a request the
        cluster cannot meet now waits up to that long for capacity (queued
        in the lease manager, fairly between tenants) instead of failing."""
        req = dict(cores=cores, duration_s=duration_s, memory_mib=memory_mib,
                   hot_timeout_ms=hot_timeout_ms)
        native = self._native.lease(cores, duration_s, memory_mib, hot_timeout_ms, wait_s)
        return Lease(native, self, req)

    def lease_group(
        self,
        n: int,
        cores: int = 1,
        duration_s: float = 600.0,
        memory_mib: int | None = None,
        hot_timeout_ms: int | None = None,
        wait_s: float | None = None,
    ) -> list[Lease]:
        """Leases ``n`` slots at once (one lease each), all or nothing;
        ``wait_s`` as for :meth:`lease` (the ``n`` wait as one request)."""
        natives = self._native.lease_group(n, cores, duration_s, memory_mib, hot_timeout_ms, wait_s)
        req = dict(cores=cores, duration_s=duration_s, memory_mib=memory_mib,
                   hot_timeout_ms=hot_timeout_ms)
        return [Lease(x, self, req) for x in natives]

    def leases(self, ended: bool = False) -> list[int]:
        """The ids of this tenant's active leases (``ended=True``: all)."""
        return self._native.leases(ended)

    def usage(self, lease_id: int) -> dict[str, int]:
        """The usage of one of this tenant's leases."""
        return json.loads(self._native.usage_json(lease_id))


class LocalCluster:
    """A lease manager and ``executor_managers`` executor managers on this
    host, as ``rfx demo`` starts them: child processes of the ``rfx``
    binary (see :func:`find_rfx`), stopped by :meth:`close` or on exiting
    a ``with`` block.

    ``python_host`` serves Python functions (``Executor(lease,
    python=...)``): a path, ``True`` to find or build one
    (:func:`find_python_host`), or None (the default) for one found
    without building."""

    def __init__(
        self,
        executor_managers: int = 1,
        cores: int | None = None,
        sandbox: str | None = None,
        rfx_bin: str | None = None,
        python_host: str | bool | None = None,
    ):
        rfx_bin = rfx_bin or find_rfx()
        if python_host is True or python_host is None:
            python_host = find_python_host(rfx_bin, build=python_host is True)
        elif python_host is False:
            python_host = None
        self._native = _native.LocalCluster(
            rfx_bin, executor_managers, cores, sandbox, python_host
        )

    @property
    def lease_manager(self) -> str:
        """``host:port`` of the lease manager."""
        return self._native.lease_manager

    def add_tenant(self, name: str) -> str:
        """Adds a tenant; returns its secret token."""
        return self._native.add_tenant(name)

    def tenant(self, name: str) -> Tenant:
        """Adds a tenant and connects as it."""
        return Tenant(self.lease_manager, "", _native_tenant=self._native.tenant(name))

    def logs(self) -> str:
        """The end of every process's log."""
        return self._native.logs()

    def close(self) -> None:
        """Stops every process."""
        self._native.close()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
