/* Collective latency for Open MPI (or any MPI), the baseline of
 * `rfx-bench coll`: the same operations, sizes and method, so the two runs
 * compare like with like.
 *
 * Methods (`--method`):
 * - osu (default), OSU 7.4's loop: per size, `warmup` untimed calls, then
 *   `iters` calls each timed on its own with an untimed barrier after it;
 *   the latency of a rank is the mean of its calls.
 * - pipelined: `iters` back-to-back calls timed as one block after one
 *   barrier; block / iters. A sender may run ahead of its receivers, so
 *   this measures throughput, not latency.
 * The figure is the mean over ranks (min and max over ranks too).
 *
 *   mpicc -O2 -o coll_lat coll_lat.c
 *   mpirun -n 4 ./coll_lat [--ops allreduce,bcast,...] [--sizes 8,1024,...]
 *                          [--iters N] [--warmup N] [--method osu|pipelined]
 *
 * Output: one JSON object per line on rank 0's stdout:
 *   {"impl":"mpi","op":"allreduce","ranks":4,"size":8,"iters":1000,
 *    "avg_us":1.23,"min_us":1.20,"max_us":1.30}
 * `size` is bytes per rank of the operation's input (for the reductions,
 * size/8 doubles; for gather/scatter/allgather/alltoall, bytes per block).
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *ALL_OPS = "barrier,bcast,reduce,allreduce,gather,scatter,allgather,reduce_scatter,alltoall,scan";

static long parse_size(const char *s) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end == 'k' || *end == 'K') v *= 1024;
    else if (*end == 'm' || *end == 'M') v *= 1024 * 1024;
    return v;
}

static int has_op(const char *list, const char *op) {
    size_t n = strlen(op);
    for (const char *p = list; (p = strstr(p, op)) != NULL; p += n) {
        int start = (p == list || p[-1] == ',');
        int end = (p[n] == '\0' || p[n] == ',');
        if (start && end) return 1;
    }
    return 0;
}

static int osu = 1; /* --method osu (per-call timing, barrier between) */

static void run_op(const char *op, long size, int iters, int warmup, int rank, int nranks,
                   char *a, char *b) {
    int count = (int)(size / 8); /* doubles for the reductions */
    int block = (int)size;
    double t0 = 0, timed = 0;
    for (int i = 0; i < warmup + iters; i++) {
        if (i == warmup) {
            MPI_Barrier(MPI_COMM_WORLD);
            t0 = MPI_Wtime();
        }
        double start = MPI_Wtime();
        if (!strcmp(op, "barrier")) MPI_Barrier(MPI_COMM_WORLD);
        else if (!strcmp(op, "bcast")) MPI_Bcast(a, block, MPI_BYTE, 0, MPI_COMM_WORLD);
        else if (!strcmp(op, "reduce")) MPI_Reduce(a, b, count, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        else if (!strcmp(op, "allreduce")) MPI_Allreduce(a, b, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        else if (!strcmp(op, "gather")) MPI_Gather(a, block, MPI_BYTE, b, block, MPI_BYTE, 0, MPI_COMM_WORLD);
        else if (!strcmp(op, "scatter")) MPI_Scatter(a, block, MPI_BYTE, b, block, MPI_BYTE, 0, MPI_COMM_WORLD);
        else if (!strcmp(op, "allgather")) MPI_Allgather(a, block, MPI_BYTE, b, block, MPI_BYTE, MPI_COMM_WORLD);
        else if (!strcmp(op, "alltoall")) MPI_Alltoall(a, block, MPI_BYTE, b, block, MPI_BYTE, MPI_COMM_WORLD);
        else if (!strcmp(op, "reduce_scatter")) {
            /* size bytes of result per rank, like MPI_Reduce_scatter_block */
            MPI_Reduce_scatter_block(a, b, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        } else if (!strcmp(op, "scan")) MPI_Scan(a, b, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        if (osu) {
            if (i >= warmup) timed += MPI_Wtime() - start;
            MPI_Barrier(MPI_COMM_WORLD);
        }
    }
    double mine = (osu ? timed : MPI_Wtime() - t0) * 1e6 / iters, sum, lo, hi;
    MPI_Reduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&mine, &lo, 1, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD);
    MPI_Reduce(&mine, &hi, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("{\"impl\":\"mpi\",\"op\":\"%s\",\"ranks\":%d,\"size\":%ld,\"iters\":%d,"
               "\"avg_us\":%.3f,\"min_us\":%.3f,\"max_us\":%.3f}\n",
               op, nranks, size, iters, sum / nranks, lo, hi);
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, nranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    const char *ops = ALL_OPS;
    const char *sizes = "8,64,512,4096,32768,262144,1048576";
    int iters = 0, warmup = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--ops")) ops = argv[i + 1];
        else if (!strcmp(argv[i], "--sizes")) sizes = argv[i + 1];
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--method")) osu = strcmp(argv[i + 1], "pipelined") != 0;
        else {
            if (rank == 0) fprintf(stderr, "unknown option %s\n", argv[i]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    long max = 8;
    char *list = strdup(sizes);
    for (char *t = strtok(list, ","); t; t = strtok(NULL, ",")) {
        long v = parse_size(t);
        if (v > max) max = v;
    }
    free(list);
    /* alltoall/gather need size * ranks bytes */
    char *a = calloc((size_t)max * nranks, 1), *b = calloc((size_t)max * nranks, 1);
    if (!a || !b) MPI_Abort(MPI_COMM_WORLD, 3);
    for (long i = 0; i < max * nranks / 8; i++) ((double *)a)[i] = rank + i % 7;
    const char *names[] = {"barrier", "bcast", "reduce", "allreduce", "gather", "scatter",
                           "allgather", "reduce_scatter", "alltoall", "scan"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        if (!has_op(ops, names[k])) continue;
        if (!strcmp(names[k], "barrier")) { /* size-free: once, as size 0 */
            run_op(names[k], 0, iters > 0 ? iters : 2000, warmup >= 0 ? warmup : 200, rank,
                   nranks, a, b);
            continue;
        }
        list = strdup(sizes);
        for (char *t = strtok(list, ","); t; t = strtok(NULL, ",")) {
            long size = parse_size(t);
            if (size < 8 && strcmp(names[k], "barrier") && strcmp(names[k], "bcast") &&
                strcmp(names[k], "gather") && strcmp(names[k], "scatter") &&
                strcmp(names[k], "allgather") && strcmp(names[k], "alltoall"))
                continue; /* reductions work on whole doubles */
            int it = iters > 0 ? iters : (size <= 8192 ? 2000 : size <= 262144 ? 300 : 60);
            int wu = warmup >= 0 ? warmup : it / 10;
            run_op(names[k], size, it, wu, rank, nranks, a, b);
        }
        free(list);
    }
    free(a);
    free(b);
    MPI_Finalize();
    return 0;
}
