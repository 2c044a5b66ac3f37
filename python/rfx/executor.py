"""Invocations on a leased executor as ``concurrent.futures`` futures."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from . import _native
from ._native import ExecutorGone, ExecutorRestarted, FunctionTimedOut, RfxError, TimedOut


@dataclass(frozen=True)
class RetryPolicy:
    """When an :class:`Executor` tries an invocation again, as
    ``rfx::tenant::RetryPolicy``: only after infrastructure failures (the
    executor died or restarted, its connection broke, no answer in time),
    never after the function's own failure, which would repeat. A lost
    executor's invocations move to a fresh lease of the same tenant, the
    library shipped again; so retry only idempotent functions."""

    max_attempts: int = 3
    """Attempts in all, the first included (1: no retry)."""
    backoff_s: float = 0.05
    """Wait before the first retry; doubled after each."""

    @staticmethod
    def retryable(e: BaseException) -> bool:
        """Whether ``e`` is worth another attempt."""
        return isinstance(e, (ExecutorGone, TimedOut)) and not isinstance(e, FunctionTimedOut)


def _bytes_of(data: Any) -> memoryview:
    """A byte view of any C-contiguous buffer (bytes, bytearray,
    memoryview, numpy array ...), without copying."""
    if isinstance(data, str):
        raise TypeError("rfx inputs are bytes-like; encode str first")
    mv = memoryview(data)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


class _Future(cf.Future):
    """A future whose ``result`` collects results itself while it waits
    (no thread hop on the fast path)."""

    def __init__(self, executor: "Executor", fn: str, data: memoryview, out: Any = None):
        super().__init__()
        self._executor = executor
        self._fn = fn
        self._data = data
        self._out = out
        self._attempt = 1
        self._last_error: BaseException | None = None

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            self._executor._drive(self, timeout)
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done():
            self._executor._drive(self, timeout)
        return super().exception(timeout)


class Executor(cf.Executor):
    """Invokes the functions of ``library`` (a path to a shared library of
    rfx functions) or of ``python`` (a Python module: a ``.py`` file, or a
    directory shipped whole with ``module`` the one imported) on the
    executor of ``lease``.

    ``submit(function, data)`` returns a :class:`concurrent.futures.Future`
    whose result is the function's output as ``bytes`` (or, with
    ``out=buffer``, its length, the output written into ``buffer``).
    ``map``, ``shutdown`` and ``with`` behave as for any executor; up to
    ``depth`` invocations are in flight at once (more wait for a slot).
    Inputs are any bytes-like object, copied once into the executor's slot.
    Failures come as exceptions under :class:`rfx.RfxError`
    (``FunctionFailed``, ``ExecutorGone``, ``TimedOut`` ...).

    ``functions`` names the functions to resolve at connection; a name not
    among them is resolved on first use (the connection is made again, once
    no invocation is pending).

    With ``retries=RetryPolicy()``, invocations that fail for the
    infrastructure's sake are tried again, on a fresh lease of the same
    tenant when the executor was lost (the executor releases the leases it
    took itself at shutdown). An input must then stay unchanged until its
    future completes.
    """

    def __init__(
        self,
        lease: Any,
        library: str | None = None,
        functions: Iterable[str] | None = None,
        *,
        python: str | None = None,
        module: str | None = None,
        depth: int = 32,
        timeout_s: float = 30.0,
        hot: bool = True,
        retries: RetryPolicy | None = None,
    ):
        self._lease = lease
        self._policy = retries
        self._retry: list[_Future] = []
        self._owned: list[Any] = []
        self.retries = 0
        """Attempts beyond the first, so far."""
        if (library is None) == (python is None):
            raise ValueError("give either library= (native functions) or python= (a Python module)")
        self._library = str(library if python is None else python)
        self._python = (python is not None, module)
        self._names: list[str] = list(functions or [])
        self._opts = (depth, timeout_s, hot)
        self._inv: Any = None
        self._lock = threading.Lock()
        self._pending: dict[int, _Future] = {}
        self._driving = threading.Lock()
        self._wake = threading.Condition(threading.Lock())
        self._shutdown = False
        self._idle = False
        self._collector = threading.Thread(
            target=self._collect_forever, name="rfx-executor-collector", daemon=True
        )
        if self._names:
            self._connect()
        self._collector.start()

    # ----- connection -------------------------------------------------------

    def _native_lease(self) -> Any:
        return getattr(self._lease, "_native", self._lease)

    def _connect(self) -> None:
        depth, timeout_s, hot = self._opts
        if self._inv is not None:
            self._inv.close()
        python, module = self._python
        self._inv = self._native_lease().invoker(
            self._library, list(self._names), depth, timeout_s, hot, True, python, module
        )

    def _ensure(self, function: str) -> None:
        if function in self._names and self._inv is not None:
            return
        # A new name: connect again once nothing is pending.
        while True:
            with self._lock:
                if not self._pending:
                    if function not in self._names:
                        self._names.append(function)
                    self._connect()
                    return
                some = next(iter(self._pending.values()))
            self._drive(some, None)

    # ----- submitting -------------------------------------------------------

    def submit(self, fn: str, /, *args: Any, **kwargs: Any) -> cf.Future:  # type: ignore[override]
        """Invokes function ``fn`` on ``data`` (the one positional argument);
        ``out=buffer`` writes the output there instead of returning bytes."""
        if len(args) != 1:
            raise TypeError("submit(function, data, *, out=None)")
        out = kwargs.pop("out", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        view = _bytes_of(args[0])
        if out is not None:
            _bytes_of(out)  # fails now, not in a collector, if unusable
        self._ensure(fn)
        fut = _Future(self, fn, view, out)
        fut.set_running_or_notify_cancel()
        with self._lock:
            try:
                ticket = self._inv.submit(fn, view)
            except RfxError as e:
                self._failed(fut, e)
                return fut
            self._pending[ticket] = fut
        if self._idle:
            with self._wake:
                self._wake.notify()
        return fut

    def submit_batch(self, fn: str, inputs: Iterable[Any]) -> list[cf.Future]:
        """``submit`` for every input; the futures in input order."""
        return [self.submit(fn, x) for x in inputs]

    def invoke(self, fn: str, data: Any) -> bytes:
        """Invokes and waits, without a future (the lowest latency)."""
        self._ensure(fn)
        # Results of others that arrive meanwhile are kept for their futures.
        return self._inv.invoke(fn, _bytes_of(data))

    async def invoke_async(self, fn: str, data: Any) -> bytes:
        """``submit`` as an awaitable (asyncio)."""
        return await asyncio.wrap_future(self.submit(fn, data))

    # ----- collecting -------------------------------------------------------

    def _failed(self, fut: _Future, err: BaseException) -> None:
        p = self._policy
        if p is not None and p.retryable(err) and fut._attempt < p.max_attempts:
            fut._last_error = err
            with self._lock:
                self._retry.append(fut)
        else:
            fut.set_exception(err)

    def _recover(self) -> None:
        """Submits the invocations waiting for a retry again: on the same
        lease after a restart, else on a fresh lease."""
        with self._lock:
            futs, self._retry = self._retry, []
        if not futs:
            return
        errors = [f._last_error for f in futs]
        attempt = min(f._attempt for f in futs)
        time.sleep(self._policy.backoff_s * 2 ** (attempt - 1))
        try:
            if not all(isinstance(e, ExecutorRestarted) for e in errors):
                old = self._lease
                renew = getattr(old, "renewed", None)
                if renew is None:
                    raise errors[0]
                self._lease = renew()
                self._owned.append(self._lease)
                try:
                    old.release()
                except RfxError:
                    pass  # lost with its executor, or released already
            self._inv = None
            self._connect()
        except RfxError as e:
            for f in futs:
                f.set_exception(e)
            return
        for f in futs:
            f._attempt += 1
            self.retries += 1
            with self._lock:
                try:
                    ticket = self._inv.submit(f._fn, f._data)
                except RfxError as e:
                    self._failed(f, e)
                    continue
                self._pending[ticket] = f

    def _complete(self, ticket: int, data: bytes | None, err: BaseException | None) -> None:
        with self._lock:
            fut = self._pending.pop(ticket, None)
        if fut is None:
            return
        if err is not None:
            self._failed(fut, err)
        elif fut._out is not None:
            dst = _bytes_of(fut._out)
            if len(data) > len(dst):
                fut.set_exception(
                    _native.PayloadTooLarge(
                        f"a result of {len(data)} bytes for a buffer of {len(dst)}"
                    )
                )
            else:
                dst[: len(data)] = data
                fut.set_result(len(data))
        else:
            fut.set_result(data)

    def _fail_all(self, err: BaseException, retry: bool = True) -> None:
        with self._lock:
            futs = list(self._pending.values())
            self._pending.clear()
        for f in futs:
            if retry:
                self._failed(f, err)
            else:
                f.set_exception(err)

    def _collect_some(self, slice_s: float) -> bool:
        """One result, waiting at most ``slice_s``; True if one came."""
        inv = self._inv
        if inv is None:
            return False
        try:
            got = inv.wait_any(slice_s)
        except RfxError as e:
            self._fail_all(e)
            return False
        if got is None:
            return False
        self._complete(*got)
        return True

    def _step(self, slice_s: float) -> bool:
        got = self._collect_some(slice_s)
        if self._retry:
            self._recover()
            return True
        return got

    def _slice(self) -> float:
        # Hot: poll (the native lock is held only for a poll, so submits
        # from other threads interleave); warm: sleep in the kernel a while.
        return 0.0 if self._opts[2] else 0.005

    def _drive(self, fut: cf.Future, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        slice_s = self._slice()
        while not fut.done():
            if self._driving.acquire(blocking=False):
                try:
                    self._step(slice_s)
                finally:
                    self._driving.release()
            else:
                cf.wait([fut], timeout=0.0005)
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _collect_forever(self) -> None:
        # Completes futures nobody waits on (callbacks, as_completed,
        # asyncio). Asleep while nothing is pending; woken by a submit, it
        # first leaves callers a millisecond to collect their own results
        # (no thread hop, no GIL contention on the fast path).
        while True:
            with self._wake:
                while not self._pending and not self._retry and not self._shutdown:
                    self._idle = True
                    self._wake.wait()
                self._idle = False
            if self._shutdown and not self._pending:
                return
            time.sleep(0.001)
            if self._driving.acquire(blocking=False):
                try:
                    while (self._pending or self._retry) and self._step(self._slice()):
                        pass
                finally:
                    self._driving.release()

    # ----- shutting down ----------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops taking invocations; with ``wait``, waits for the pending
        ones, then closes the connection."""
        self._shutdown = True
        if cancel_futures or not wait:
            gone = RfxError("the executor was shut down")
            self._fail_all(gone, retry=False)
            with self._lock:
                futs, self._retry = self._retry, []
            for f in futs:
                f.set_exception(gone)
        while True:
            with self._lock:
                some = next(iter(self._pending.values()), None) or next(iter(self._retry), None)
            if some is None:
                break
            self._drive(some, None)
        with self._wake:
            self._wake.notify()
        if self._collector.is_alive() and self._collector is not threading.current_thread():
            self._collector.join(timeout=5)
        if self._inv is not None:
            self._inv.close()
        for lease in self._owned:
            try:
                lease.release()
            except RfxError:
                pass  # lost with its executor, or released already
