"""rfx.collectives in real processes: `rfx run -n N python3 ...`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import rfx

PROG = Path(__file__).parent / "ranks" / "check_collectives.py"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_every_operation_matches_numpy(n):
    cmd = [rfx.find_rfx(), "run", "-n", str(n), "--timeout-s", "120", sys.executable, str(PROG)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in range(n):
        assert f"rank {rank} of {n}: ok" in r.stdout


def test_a_dead_rank_is_an_exception_not_a_hang(tmp_path):
    prog = tmp_path / "die.py"
    prog.write_text(
        "import os, numpy as np, rfx\n"
        "from rfx.collectives import Communicator\n"
        "c = Communicator.from_env()\n"
        # Rank 1 leaves without a word (exit 0: `rfx run` then lets rank 0
        # run to its end instead of stopping it).
        "if c.rank == 1:\n"
        "    os._exit(0)\n"
        "try:\n"
        "    c.Allreduce(rfx.collectives.IN_PLACE, np.ones(10))\n"
        "except rfx.RfxError as e:\n"
        "    print(f'raised {type(e).__name__}', flush=True)\n"
    )
    cmd = [rfx.find_rfx(), "run", "-n", "2", "--timeout-s", "60", sys.executable, str(prog)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert "raised PeerGone" in r.stdout, r.stdout + r.stderr
