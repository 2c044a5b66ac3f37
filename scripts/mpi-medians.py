#!/usr/bin/env python3
"""Medians per cell of several `rfx-bench mpi --json FILE` runs, as the markdown
table of docs/benchmarks.md ("MPI programs": rfx's figure, then rfx / Open MPI
and rfx / MPICH, losses in bold), and on stderr the count of latency points at
or below each MPI, per run and of the medians.

    for i in 1 2 3; do PATH=$PWD/target/mpi-venv/bin:$PATH \\
        target/release/rfx-bench mpi --rounds 5 --overhead-iters 0 --json out/mpi-$i.json; done
    scripts/mpi-medians.py out/mpi-*.json
"""
import json, statistics, sys

files = sys.argv[1:]
if not files:
    sys.exit(__doc__)
cells = {}
per_run = []
for f in files:
    run = {'ompi': [0, 0], 'mpich': [0, 0]}
    for r in json.load(open(f))['results']:
        k = (r['benchmark'], r['ranks'], r['size'])
        cells.setdefault(k, []).append((r['rfx'], r['ompi'], r['mpich']))
        # The latency points: 8 B to 1 MiB (as in the docs), and barrier.
        if r['unit'] == 'us' and (r['size'] >= 8 or r['benchmark'] == 'osu_barrier'):
            for m in ('ompi', 'mpich'):
                run[m][1] += 1
                run[m][0] += r['rfx'] <= r[m]
    per_run.append(run)

def sz(s):
    for u, m in (('MiB', 1 << 20), ('KiB', 1 << 10)):
        if s >= m and s % m == 0:
            return f'{s // m} {u}'
    return f'{s} B'

def fig(x):
    return f'{x:.0f}' if x >= 100 else f'{x:.2f}' if x < 10 else f'{x:.1f}'

def ratio(a, b, bandwidth):
    x = a / b
    lose = x < 1 if bandwidth else x > 1
    s = f'{x:.2f}'
    return f'**{s}**' if lose else s

med = {k: tuple(statistics.median(v[i] for v in vs) for i in range(3)) for k, vs in cells.items()}
benches = []
for (b, _, _) in med:
    if b not in benches:
        benches.append(b)
shown = [8, 64, 512, 4096, 32768, 262144, 1048576]
print('| benchmark | ' + ' | '.join(sz(s) for s in shown) + ' |')
print('|---|' + '---:|' * len(shown))
for b in benches:
    if b == 'osu_barrier':
        continue
    bw = b == 'osu_bw'
    row = []
    for s in shown:
        c = med.get((b, 2, s))
        if c is None:
            row.append('')
            continue
        rfx, ompi, mpich = c
        row.append(f'{fig(rfx)} ({ratio(rfx, ompi, bw)} / {ratio(rfx, mpich, bw)})')
    print(f'| {b}{" (MB/s)" if bw else ""} | ' + ' | '.join(row) + ' |')
for (b, n, s), (rfx, ompi, mpich) in med.items():
    if b == 'osu_barrier':
        print(f'\n`osu_barrier`: {rfx:.2f} µs (x{rfx / ompi:.2f} Open MPI, x{rfx / mpich:.2f} MPICH).')
lat = [(k, v) for k, v in med.items()
       if k[0] != 'osu_bw' and (k[2] >= 8 or k[0] == 'osu_barrier')]
for i, m in ((1, 'Open MPI'), (2, 'MPICH')):
    at = sum(v[0] <= v[i] for _, v in lat)
    runs = ', '.join(str(r['ompi' if i == 1 else 'mpich'][0]) for r in per_run)
    print(f'at or below {m}: {at} of {len(lat)} latency points of the medians (runs: {runs})',
          file=sys.stderr)
