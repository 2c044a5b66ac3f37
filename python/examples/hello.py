"""The README's five lines: a cluster on this host, a lease, a future."""

import rfx

with rfx.LocalCluster() as cluster, cluster.tenant("alice").lease(cores=1) as lease:
    with rfx.Executor(lease, rfx.example_library()) as ex:
        print(ex.submit("echo", b"hello from rfx").result())
