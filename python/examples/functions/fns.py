"""Python functions for rfx executors (see python_functions.py)."""

import numpy as np

import rfx


def upper(inp):
    """inp is a read-only view of the invocation's slot: no copy."""
    return bytes(inp).upper()


def norm(inp, ctx):
    """A group invocation: each rank holds a slice of a vector; the squared
    norm is allreduced between the executors, peer to peer."""
    x = np.frombuffer(inp, dtype=np.float64)
    local = np.array([x @ x])
    total = np.empty(1)
    ctx.comm.Allreduce(local, total, op=rfx.SUM)
    return np.sqrt(total)
