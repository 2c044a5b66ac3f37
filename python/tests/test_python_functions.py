"""Functions written in Python, run by the executors' Python host: futures,
zero-copy inputs, outputs, failures, modules with dependencies, the
sandbox, group invocations with ctx.comm, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import rfx


FUNCTIONS = '''
import os, sys
import numpy as np

def noop(inp):
    return None

def upper(inp):
    return bytes(inp).upper()

def total(inp):
    # A view of the slot: numpy reads it in place.
    return np.array([np.frombuffer(inp, dtype=np.float64).sum()])

def into_out(inp, ctx):
    # Writes the result straight into the result slot.
    ctx.out[: len(inp)] = inp[::-1]
    return len(inp)

def context(inp, ctx):
    return f"{ctx.rank}/{ctx.size} comm={ctx.comm is not None}".encode()

def fails(inp):
    raise ValueError(f"no good: {len(inp)} bytes")

def wrong_type(inp):
    return "a str"

def too_long(inp):
    return bytes(2 << 20)

def exits(inp):
    os._exit(3)


'''


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def module(tmp_path: Path) -> Path:
    return write(tmp_path, "funcs.py", FUNCTIONS)


def test_python_functions_serve_futures_batches_and_buffers(lease, module):
    with rfx.Executor(lease, python=str(module), functions=["upper", "total"]) as ex:
        assert ex.submit("upper", b"hello").result() == b"HELLO"
        assert list(ex.map(lambda *_: None, [])) == []
        outs = [f.result() for f in ex.submit_batch("upper", [b"a", b"b", b"c"])]
        assert outs == [b"A", b"B", b"C"]
        x = np.arange(1000, dtype=np.float64)
        got = np.frombuffer(ex.submit("total", x).result(), dtype=np.float64)
        assert got[0] == x.sum()
        buf = bytearray(8)
        assert ex.submit("total", x, out=buf).result() == 8
        assert np.frombuffer(buf)[0] == x.sum()
        assert ex.submit("into_out", b"abcd").result() == b"dcba"
        assert ex.submit("context", b"").result() == b"0/1 comm=False"
        assert ex.submit("noop", b"x").result() == b""


def test_python_exceptions_fail_the_invocation_with_their_last_line(lease, module):
    with rfx.Executor(lease, python=str(module), functions=["fails", "upper"]) as ex:
        with pytest.raises(rfx.FunctionFailed, match="ValueError: no good: 3 bytes"):
            ex.submit("fails", b"abc").result()
        with pytest.raises(rfx.FunctionFailed, match="returned str"):
            ex.submit("wrong_type", b"").result()
        with pytest.raises(rfx.FunctionFailed, match="exceeds the result slot"):
            ex.submit("too_long", b"").result()
        # The executor, and the interpreter, survive.
        assert ex.submit("upper", b"still").result() == b"STILL"
        with pytest.raises(rfx.RfxError, match="no_such"):
            ex.submit("no_such", b"").result()


def test_a_module_that_does_not_import_is_refused_with_the_reason(lease, tmp_path):
    bad = write(tmp_path, "broken.py", "def f(inp):\n    return (\n")
    with pytest.raises(rfx.RfxError, match="SyntaxError"):
        rfx.Executor(lease, python=str(bad), functions=["f"])
    missing = write(tmp_path, "needs.py", "import not_installed_anywhere\n")
    with pytest.raises(rfx.RfxError, match="ModuleNotFoundError"):
        rfx.Executor(lease, python=str(missing), functions=["f"])


def test_a_directory_ships_with_its_dependencies_and_new_code_replaces_old(lease, tmp_path):
    app = tmp_path / "app"
    write(app, "main.py", "from helpers import shout\nimport pkg\ndef f(inp):\n    return shout(bytes(inp)) + pkg.SUFFIX\n")
    write(app, "helpers.py", "def shout(b):\n    return b.upper()\n")
    write(app, "pkg/__init__.py", "SUFFIX = b'!'\n")
    with rfx.Executor(lease, python=str(app), module="main", functions=["f"]) as ex:
        assert ex.submit("f", b"hi").result() == b"HI!"
    # Same module names, new contents, same executor: the new code runs.
    write(app, "pkg/__init__.py", "SUFFIX = b'?'\n")
    with rfx.Executor(lease, python=str(app), module="main", functions=["f"]) as ex:
        assert ex.submit("f", b"hi").result() == b"HI?"
    with pytest.raises(rfx.RfxError, match="module"):
        rfx.Executor(lease, python=str(app), functions=["f"])


def test_python_functions_run_confined(lease, tmp_path):
    if rfx._native.default_sandbox() != "strict":
        pytest.fail("the strict sandbox needs root: run the tests as root")
    site = Path(np.__file__).parent.parent
    probe = write(tmp_path, "probe.py", f'''
        import os
        def probe(inp):
            out = [str(os.getuid())]
            for p in ({str(Path(__file__).resolve())!r}, {str(tmp_path)!r}):
                out.append(str(os.path.exists(p)))
            try:
                open("/etc/shadow").read()
                out.append("read")
            except OSError as e:
                out.append(type(e).__name__)
            try:
                open({str(site / "rfx_probe")!r}, "w")
                out.append("wrote")
            except OSError as e:
                out.append(type(e).__name__)
            return " ".join(out).encode()
    ''')
    with rfx.Executor(lease, python=str(probe), functions=["probe"]) as ex:
        uid, test_file, tmp, shadow, write_site = ex.submit("probe", b"").result().decode().split()
    assert uid != "0"
    # The host's files are out of sight or closed; the packages read-only.
    assert (test_file, tmp) == ("False", "False")
    assert shadow == "PermissionError"
    assert write_site in ("OSError", "PermissionError")


def test_a_python_function_that_exits_raises_never_hangs(tenant, module):
    lease = tenant.lease(cores=1, duration_s=120)
    with rfx.Executor(lease, python=str(module), functions=["exits"], timeout_s=10) as ex:
        t = time.monotonic()
        with pytest.raises(rfx.ExecutorGone):
            ex.submit("exits", b"").result(timeout=30)
        assert time.monotonic() - t < 20
    try:
        lease.release()
    except rfx.LeaseEnded:
        pass


GROUP = '''
import numpy as np
import rfx

def allreduce(inp, ctx):
    x = np.frombuffer(inp, dtype=np.float64)
    out = np.empty_like(x)
    ctx.comm.Allreduce(x, out, op=rfx.SUM)
    return out

def collectives(inp, ctx):
    comm = ctx.comm
    comm.Barrier()
    b = np.full(4, comm.rank, dtype=np.int64)
    comm.Bcast(b, root=1)
    g = np.empty(comm.size * 2, dtype=np.float32)
    comm.Allgather(np.full(2, comm.rank, dtype=np.float32), g)
    m = np.array([comm.rank + 1.0])
    r = np.zeros(1)
    comm.Reduce(m, r, op=rfx.MAX, root=0)
    if comm.rank == 0:
        comm.Send(np.array([7, 8], dtype=np.int32), dest=1, tag=3)
        got = np.zeros(2, dtype=np.int32)
    else:
        got = np.zeros(2, dtype=np.int32)
        comm.Recv(got, source=0, tag=3)
    # gather, scatter and alltoall: the table's version 2 entries.
    ga = np.zeros(comm.size * 3, dtype=np.int64) if comm.rank == 0 else None
    comm.Gather(np.full(3, 10 + comm.rank, dtype=np.int64), ga, root=0)
    sc = np.zeros(2, dtype=np.float64)
    comm.Scatter(np.arange(comm.size * 2, dtype=np.float64) if comm.rank == 1 else None, sc, root=1)
    aa = np.zeros(comm.size, dtype=np.int32)
    comm.Alltoall(np.arange(comm.size, dtype=np.int32) + 100 * comm.rank, aa)
    tail = (ga.tobytes() if ga is not None else b"") + sc.tobytes() + aa.tobytes()
    return b.tobytes() + g.tobytes() + r.tobytes() + got.tobytes() + tail

kept = []
def keep(inp, ctx):
    kept.append(ctx.comm)
    return b""

def use_kept(inp):
    try:
        kept[0].Barrier()
    except RuntimeError as e:
        return str(e).encode()
    return b"used"
'''


def test_a_group_invocation_of_a_python_function_allreduces_numpy_arrays(tenant, tmp_path):
    mod = write(tmp_path, "grouped.py", GROUP)
    leases = tenant.lease_group(2, cores=1, duration_s=120)
    try:
        with rfx.Group(leases, python=str(mod), functions=["allreduce", "collectives", "keep", "use_kept"]) as g:
            xs = [np.random.default_rng(r).random(1000) for r in range(2)]
            outs = g.invoke("allreduce", xs)
            for o in outs:
                np.testing.assert_allclose(np.frombuffer(o), xs[0] + xs[1])
            for rank, o in enumerate(g.invoke_all("collectives")):
                b = np.frombuffer(o[:32], dtype=np.int64)
                ga = np.frombuffer(o[32:48], dtype=np.float32)
                r = np.frombuffer(o[48:56])
                got = np.frombuffer(o[56:64], dtype=np.int32)
                np.testing.assert_array_equal(b, [1] * 4)
                np.testing.assert_array_equal(ga, [0, 0, 1, 1])
                if rank == 0:
                    assert r[0] == 2.0
                    gathered, rest = np.frombuffer(o[64:112], dtype=np.int64), o[112:]
                    np.testing.assert_array_equal(gathered, [10, 10, 10, 11, 11, 11])
                else:
                    np.testing.assert_array_equal(got, [7, 8])
                    rest = o[64:]
                np.testing.assert_array_equal(np.frombuffer(rest[:16]), [2 * rank, 2 * rank + 1])
                np.testing.assert_array_equal(np.frombuffer(rest[16:], dtype=np.int32), [rank, 100 + rank])
            # A communicator kept past its invocation refuses, never crashes.
            g.invoke_all("keep")
            for o in g.invoke_all("use_kept"):
                assert b"after its invocation returned" in o
    finally:
        for lease in leases:
            lease.release()


def test_rfx_invoke_runs_a_python_function_from_the_cli(cluster, tenant, module, tmp_path):
    token = cluster.add_tenant(f"cli{os.getpid()}")
    lease = rfx.Tenant(cluster.lease_manager, token).lease(cores=1, duration_s=60)
    inp = tmp_path / "in"
    inp.write_bytes(b"from the cli")
    env = dict(os.environ, RFX_TENANT_TOKEN=token)
    cmd = [rfx.find_rfx(), "invoke", "--lease", str(lease.id), "--lease-manager", cluster.lease_manager,
           "--python", str(module), "--input", str(inp)]
    ok = subprocess.run(cmd + ["--function", "upper"], env=env, capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"FROM THE CLI"
    bad = subprocess.run(cmd + ["--function", "fails"], env=env, capture_output=True, timeout=60)
    assert bad.returncode != 0
    assert b"ValueError: no good: 12 bytes" in bad.stderr
    lease.release()


def test_the_python_functions_example_runs():
    example = Path(__file__).resolve().parent.parent / "examples" / "python_functions.py"
    # Every CPU again (the lease fixture pins this process off leased
    # cores): the example's cluster offers the CPUs it may use.
    every = lambda: os.sched_setaffinity(0, range(os.cpu_count() or 1))  # noqa: E731
    r = subprocess.run([sys.executable, str(example)], capture_output=True, timeout=120, preexec_fn=every)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "b'HELLO FROM PYTHON IN RFX'"
    got, _, want = lines[1].partition(" == ")
    assert abs(float(got) - float(want)) < 1e-9 * float(want)
