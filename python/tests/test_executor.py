"""rfx.Executor against a real LocalCluster: futures, batches, buffers,
exceptions, a killed executor, leasing."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import signal
import time

import numpy as np
import pytest

import rfx
from conftest import pid_listening_on


def test_futures_map_and_batches(lease, library):
    with rfx.Executor(lease, library, ["echo"]) as ex:
        f = ex.submit("echo", b"hello")
        assert isinstance(f, cf.Future)
        assert f.result(timeout=10) == b"hello"
        assert list(ex.map("echo", [b"a", b"bb", b""])) == [b"a", b"bb", b""]
        fs = ex.submit_batch("echo", [bytes([i]) * i for i in range(100)])
        assert [x.result() for x in fs] == [bytes([i]) * i for i in range(100)]
        # Completed by the executor's collector, nobody calling result().
        fs = [ex.submit("echo", str(i).encode()) for i in range(200)]
        done = {f.result() for f in cf.as_completed(fs, timeout=30)}
        assert done == {str(i).encode() for i in range(200)}


def test_buffers_in_and_out(lease, library):
    with rfx.Executor(lease, library) as ex:
        x = np.random.default_rng(1).random(1000)
        got = np.frombuffer(ex.submit("sum_f64", x).result(), dtype=np.float64)
        assert got[0] == pytest.approx(x.sum())
        # bytearray, memoryview, a slice of an array
        assert ex.submit("echo", bytearray(b"xyz")).result() == b"xyz"
        assert ex.submit("echo", memoryview(b"abcdef")[2:]).result() == b"cdef"
        out = bytearray(16)
        assert ex.submit("echo", b"into", out=out).result() == 4
        assert bytes(out[:4]) == b"into"
        small = bytearray(2)
        with pytest.raises(rfx.PayloadTooLarge):
            ex.submit("echo", b"too long", out=small).result()
        with pytest.raises(TypeError):
            ex.submit("echo", "a str is not bytes")


def test_asyncio(lease, library):
    async def main(ex):
        return await asyncio.gather(*(ex.invoke_async("echo", bytes([i])) for i in range(20)))

    with rfx.Executor(lease, library, ["echo"]) as ex:
        assert asyncio.run(main(ex)) == [bytes([i]) for i in range(20)]


def test_errors_are_exceptions_with_reasons(lease, library):
    with rfx.Executor(lease, library, ["echo", "panics", "noop"]) as ex:
        with pytest.raises(rfx.FunctionFailed, match="panics on purpose"):
            ex.submit("panics", b"").result()
        with pytest.raises(rfx.FunctionFailed, match="not a whole number of f64"):
            ex.submit("sum_f64", b"abc").result()
        # The executor survives its function's failure.
        assert ex.submit("echo", b"still").result() == b"still"
        with pytest.raises(rfx.PayloadTooLarge):
            ex.submit("echo", bytes(17 << 20)).result()
        with pytest.raises(rfx.RfxError, match="no_such_function"):
            ex.submit("no_such_function", b"").result()
        assert issubclass(rfx.FunctionFailed, rfx.RfxError)


def test_a_crashed_executor_raises_never_hangs(lease, library):
    with rfx.Executor(lease, library, ["crash", "echo"], timeout_s=10) as ex:
        t = time.monotonic()
        with pytest.raises(rfx.ExecutorGone):
            ex.submit("crash", b"").result(timeout=30)
        assert time.monotonic() - t < 20


def test_a_killed_executor_fails_every_pending_future(tenant, library):
    lease = tenant.lease(cores=1, duration_s=120)
    ex = rfx.Executor(lease, library, ["echo"], timeout_s=10)
    assert ex.submit("echo", b"x").result() == b"x"
    os.kill(pid_listening_on(lease.executor), signal.SIGKILL)
    t = time.monotonic()
    futures = [ex.submit("echo", b"y") for _ in range(5)]
    for f in futures:
        with pytest.raises(rfx.RfxError):
            f.result(timeout=30)
    assert time.monotonic() - t < 25
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit("echo", b"after shutdown")
    try:
        lease.release()
    except rfx.LeaseEnded:
        pass


def test_leasing_listing_usage_release(tenant, library):
    lease = tenant.lease(cores=1, duration_s=60)
    assert lease.id in tenant.leases()
    assert lease.cores and ":" in lease.executor
    with rfx.Executor(lease, library, ["noop"]) as ex:
        for _ in range(10):
            ex.invoke("noop", b"")
    usage = lease.release()
    assert usage is not None and set(usage) >= {"core_ms", "invocations"}
    assert lease.release() is None
    assert lease.id not in tenant.leases()
    assert lease.id in tenant.leases(ended=True)
    group = tenant.lease_group(2, cores=1, duration_s=60)
    assert len({g.id for g in group}) == 2
    for g in group:
        g.release()
    with pytest.raises(rfx.RfxError):
        tenant.lease(cores=1, duration_s=-1)


def test_retries_move_to_a_fresh_lease_after_the_executor_is_lost(tenant, library):
    lease = tenant.lease(cores=1, duration_s=120)
    policy = rfx.RetryPolicy(max_attempts=3, backoff_s=0.01)
    ex = rfx.Executor(lease, library, ["echo", "crash", "panics"], timeout_s=10, retries=policy)
    assert ex.submit("echo", b"before").result() == b"before"
    os.kill(pid_listening_on(lease.executor), signal.SIGKILL)
    futures = [ex.submit("echo", bytes([i]) * 10) for i in range(5)]
    assert [f.result(timeout=60) for f in futures] == [bytes([i]) * 10 for i in range(5)]
    assert ex.retries >= 1 and ex._lease.id != lease.id
    assert lease.id not in tenant.leases()
    # The function's own failure is never retried.
    before = ex.retries
    with pytest.raises(rfx.FunctionFailed):
        ex.submit("panics", b"").result(timeout=30)
    assert ex.retries == before
    # A function that kills every executor it runs on: tried max_attempts
    # times, then the infrastructure's error.
    with pytest.raises(rfx.ExecutorGone):
        ex.submit("crash", b"").result(timeout=90)
    assert ex.retries == before + 2
    owned = [l.id for l in ex._owned]
    ex.shutdown()
    assert not set(owned) & set(tenant.leases())
    assert not rfx.RetryPolicy.retryable(rfx.FunctionFailed("x"))
    assert not rfx.RetryPolicy.retryable(rfx.FunctionTimedOut("x"))
    assert rfx.RetryPolicy.retryable(rfx.ExecutorRestarted("x"))


def test_a_lease_may_wait_for_capacity(tenant):
    import threading

    cores = os.cpu_count() or 1
    held = tenant.lease(cores=cores, duration_s=60)
    with pytest.raises(rfx.LeaseError, match="not granted within"):
        tenant.lease(cores=1, wait_s=0.3)
    got = {}

    def waiter():
        got["lease"] = tenant.lease(cores=1, duration_s=60, wait_s=30)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert "lease" not in got
    held.release()
    t.join(timeout=30)
    assert "lease" in got
    got["lease"].release()
