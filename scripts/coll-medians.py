#!/usr/bin/env python3
"""Medians per cell of several `rfx-bench coll --mpi ... --json FILE` runs, as the
markdown table of docs/benchmarks.md (ratios above 1 in bold), and the count of
cells at or below the MPI per rank count on stderr.

    for i in 1 2 3 4 5; do target/release/rfx-bench coll --mpi target/coll_lat --json out/coll-$i.json; done
    scripts/coll-medians.py out/coll-*.json
"""
import json, statistics, sys
files = sys.argv[1:]
cells = {}
for f in files:
    for r in json.load(open(f))['rows']:
        k = (r['op'], r['ranks'], r['size'])
        cells.setdefault(k, []).append((r['rfx_avg_us'], r['mpi_avg_us']))
ops = []
for (op, n, s) in cells:
    if op not in ops: ops.append(op)
def sz(s):
    if s == 0: return '-'
    for u, m in (('MiB', 1<<20), ('KiB', 1<<10)):
        if s >= m and s % m == 0: return f'{s//m} {u}'
    return f'{s} B'
sizes = sorted({s for (_, _, s) in cells})
met = {2: [0, 0], 4: [0, 0]}
print('| op | size | 2 ranks: rfx µs | Open MPI µs | rfx / MPI | 4 ranks: rfx µs | Open MPI µs | rfx / MPI |')
print('|---|---:|---:|---:|---:|---:|---:|---:|')
for op in ops:
    for s in sizes:
        row = []
        ok = False
        for n in (2, 4):
            v = cells.get((op, n, s))
            if not v:
                continue
            ok = True
            a = statistics.median(x for x, _ in v); b = statistics.median(y for _, y in v)
            r = a / b
            met[n][1] += 1
            if r <= 1.0: met[n][0] += 1
            rs = f'{r:.2f}' if r <= 1.0 else f'**{r:.2f}**'
            row += [f'{a:.2f}', f'{b:.2f}', rs]
        if ok:
            print(f'| {op} | {sz(s)} | ' + ' | '.join(row) + ' |')
print()
print('met', met, file=sys.stderr)
