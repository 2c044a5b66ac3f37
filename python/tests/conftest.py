"""A real LocalCluster (lease manager + executor manager child processes)
shared by the tests of a session, and the example function library."""

from __future__ import annotations

import os

import pytest

import rfx


@pytest.fixture(scope="session")
def cluster():
    # python_host=True: Python functions, with the host built if missing.
    with rfx.LocalCluster(python_host=True) as c:
        yield c


@pytest.fixture(scope="session")
def library() -> str:
    return rfx.example_library()


@pytest.fixture
def tenant(cluster, request):
    return cluster.tenant(f"t{abs(hash(request.node.name)) % 10**8}")


@pytest.fixture
def lease(tenant):
    with tenant.lease(cores=1, duration_s=120) as l:
        # Busy-polling peers on one CPU crawl: keep this process off the
        # leased core when the machine has another.
        cpus = set(range(os.cpu_count() or 1))
        if len(cpus) > 1:
            os.sched_setaffinity(0, cpus - set(l.cores) or cpus)
        yield l


def pid_listening_on(addr: str) -> int:
    """The pid of the process listening on loopback ``host:port`` (from
    /proc: the socket's inode, then whose fd it is)."""
    port = int(addr.rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A":  # LISTEN
                inodes.add(f[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    raise LookupError(f"nobody listens on {addr}")
