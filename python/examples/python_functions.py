"""Functions written in Python, run inside leased executors: one call, then
a group invocation whose instances allreduce with ctx.comm."""

from pathlib import Path

import numpy as np

import rfx

FNS = str(Path(__file__).with_name("functions") / "fns.py")

# python_host=True: build the Python host for this interpreter if needed.
with rfx.LocalCluster(python_host=True) as cluster:
    tenant = cluster.tenant("alice")
    with tenant.lease(cores=1) as lease, rfx.Executor(lease, python=FNS) as ex:
        print(ex.submit("upper", b"hello from python in rfx").result())

    x = np.arange(1000, dtype=np.float64)
    leases = tenant.lease_group(2)
    with rfx.Group(leases, python=FNS, functions=["norm"]) as group:
        outs = group.invoke("norm", np.array_split(x, 2))
    for lease in leases:
        lease.release()
    print(np.frombuffer(outs[0])[0], "==", np.linalg.norm(x))
