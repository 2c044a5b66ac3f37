/* Blocking collectives: Barrier, Bcast, Reduce, Allreduce, Gather,
 * Scatter, Allgather, Alltoall, Reduce_scatter_block, Scan, Exscan, with
 * every rank as the root and with MPI_IN_PLACE where the standard allows
 * it; a large Bcast and Allreduce; a collective on MPI_DOUBLE_INT; zero
 * items; matching type signatures of different datatypes. */
#include "check.h"

static int rank, size;

/* What rank r contributes at index i. */
static int val(int r, int i) { return 1000 * r + i; }

static void test_barrier(void) {
    for (int i = 0; i < 5; i++)
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
}

static void test_bcast(void) {
    for (int root = 0; root < size; root++) {
        int v[5];
        double d[3];
        for (int i = 0; i < 5; i++)
            v[i] = rank == root ? val(root, i) : -1;
        for (int i = 0; i < 3; i++)
            d[i] = rank == root ? root + i / 4.0 : -1;
        MPI_OK(MPI_Bcast(v, 5, MPI_INT, root, MPI_COMM_WORLD));
        MPI_OK(MPI_Bcast(d, 3, MPI_DOUBLE, root, MPI_COMM_WORLD));
        for (int i = 0; i < 5; i++)
            CHECK(v[i] == val(root, i), "Bcast root %d: v[%d] = %d", root, i, v[i]);
        for (int i = 0; i < 3; i++)
            CHECK(d[i] == root + i / 4.0, "Bcast root %d: d[%d] = %g", root, i,
                  d[i]);
        MPI_OK(MPI_Bcast(NULL, 0, MPI_INT, root, MPI_COMM_WORLD));
    }
    /* 1 MiB from the last rank. */
    int n = 1 << 18, root = size - 1;
    int *b = malloc(sizeof *b * (size_t)n);
    for (int i = 0; i < n; i++)
        b[i] = rank == root ? i * 3 + 1 : 0;
    MPI_OK(MPI_Bcast(b, n, MPI_INT, root, MPI_COMM_WORLD));
    for (int i = 0; i < n; i++)
        CHECK(b[i] == i * 3 + 1, "big Bcast: b[%d] = %d", i, b[i]);
    free(b);
}

static void test_reduce(void) {
    int sum[3], max[3];
    for (int i = 0; i < 3; i++) {
        sum[i] = 0;
        max[i] = val(size - 1, i);
        for (int r = 0; r < size; r++)
            sum[i] += val(r, i);
    }
    for (int root = 0; root < size; root++) {
        int in[3], out[3] = {-1, -1, -1};
        for (int i = 0; i < 3; i++)
            in[i] = val(rank, i);
        /* Off the root the receive buffer is not significant: NULL. */
        MPI_OK(MPI_Reduce(in, rank == root ? out : NULL, 3, MPI_INT, MPI_SUM, root,
                          MPI_COMM_WORLD));
        if (rank == root)
            for (int i = 0; i < 3; i++)
                CHECK(out[i] == sum[i], "Reduce root %d: [%d] = %d, want %d", root,
                      i, out[i], sum[i]);
        for (int i = 0; i < 3; i++)
            CHECK(in[i] == val(rank, i), "Reduce changed the send buffer");
        /* In place at the root. */
        int io[3];
        for (int i = 0; i < 3; i++)
            io[i] = val(rank, i);
        if (rank == root)
            MPI_OK(MPI_Reduce(MPI_IN_PLACE, io, 3, MPI_INT, MPI_MAX, root,
                              MPI_COMM_WORLD));
        else
            MPI_OK(MPI_Reduce(io, NULL, 3, MPI_INT, MPI_MAX, root, MPI_COMM_WORLD));
        for (int i = 0; i < 3; i++)
            CHECK(io[i] == (rank == root ? max[i] : val(rank, i)),
                  "Reduce in place root %d: [%d] = %d", root, i, io[i]);
    }
}

static void test_allreduce(void) {
    int in[4], out[4], want[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        in[i] = val(rank, i);
        for (int r = 0; r < size; r++)
            want[i] += val(r, i);
    }
    MPI_OK(MPI_Allreduce(in, out, 4, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    for (int i = 0; i < 4; i++)
        CHECK(out[i] == want[i], "Allreduce [%d] = %d, want %d", i, out[i], want[i]);
    MPI_OK(MPI_Allreduce(MPI_IN_PLACE, in, 4, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    for (int i = 0; i < 4; i++)
        CHECK(in[i] == want[i], "Allreduce in place [%d] = %d", i, in[i]);
    double dmin = rank + 0.5;
    MPI_OK(MPI_Allreduce(MPI_IN_PLACE, &dmin, 1, MPI_DOUBLE, MPI_MIN,
                         MPI_COMM_WORLD));
    CHECK(dmin == 0.5, "Allreduce MIN %g", dmin);
    /* 8 MiB of doubles. */
    int n = 1 << 20;
    double *a = malloc(sizeof *a * (size_t)n), *b = malloc(sizeof *b * (size_t)n);
    for (int i = 0; i < n; i++)
        a[i] = (double)(i % 1024) + rank;
    MPI_OK(MPI_Allreduce(a, b, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    double ranks = (double)size * (size - 1) / 2;
    for (int i = 0; i < n; i++)
        CHECK(b[i] == (double)(i % 1024) * size + ranks, "big Allreduce [%d] = %g",
              i, b[i]);
    free(a);
    free(b);
}

static void test_gather_scatter(void) {
    int *all = malloc(sizeof *all * 2 * (size_t)size);
    for (int root = 0; root < size; root++) {
        int mine[2] = {val(rank, 0), val(rank, 1)};
        for (int i = 0; i < 2 * size; i++)
            all[i] = -1;
        MPI_OK(MPI_Gather(mine, 2, MPI_INT, rank == root ? all : NULL, 2, MPI_INT,
                          root, MPI_COMM_WORLD));
        if (rank == root)
            for (int r = 0; r < size; r++)
                for (int i = 0; i < 2; i++)
                    CHECK(all[2 * r + i] == val(r, i), "Gather root %d: [%d][%d] = %d",
                          root, r, i, all[2 * r + i]);
        /* In place: the root's block is already in the receive buffer. */
        for (int i = 0; i < 2 * size; i++)
            all[i] = -1;
        if (rank == root) {
            all[2 * root] = val(root, 0);
            all[2 * root + 1] = val(root, 1);
            MPI_OK(MPI_Gather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, 2, MPI_INT, root,
                              MPI_COMM_WORLD));
            for (int r = 0; r < size; r++)
                for (int i = 0; i < 2; i++)
                    CHECK(all[2 * r + i] == val(r, i),
                          "Gather in place root %d: [%d][%d] = %d", root, r, i,
                          all[2 * r + i]);
        } else {
            MPI_OK(MPI_Gather(mine, 2, MPI_INT, NULL, 0, MPI_DATATYPE_NULL, root,
                              MPI_COMM_WORLD));
        }

        /* Scatter: block r of the root's buffer goes to rank r. */
        int got[2] = {-1, -1};
        for (int r = 0; r < size; r++)
            for (int i = 0; i < 2; i++)
                all[2 * r + i] = rank == root ? val(r, i) + root : -1;
        MPI_OK(MPI_Scatter(rank == root ? all : NULL, 2, MPI_INT, got, 2, MPI_INT,
                           root, MPI_COMM_WORLD));
        for (int i = 0; i < 2; i++)
            CHECK(got[i] == val(rank, i) + root, "Scatter root %d: [%d] = %d", root, i,
                  got[i]);
        /* In place: the root keeps its block where it is. */
        got[0] = got[1] = -1;
        if (rank == root) {
            MPI_OK(MPI_Scatter(all, 2, MPI_INT, MPI_IN_PLACE, 0, MPI_DATATYPE_NULL,
                               root, MPI_COMM_WORLD));
            for (int r = 0; r < size; r++)
                for (int i = 0; i < 2; i++)
                    CHECK(all[2 * r + i] == val(r, i) + root,
                          "Scatter in place changed the root's buffer");
        } else {
            MPI_OK(MPI_Scatter(NULL, 0, MPI_DATATYPE_NULL, got, 2, MPI_INT, root,
                               MPI_COMM_WORLD));
            for (int i = 0; i < 2; i++)
                CHECK(got[i] == val(rank, i) + root,
                      "Scatter in place root %d: [%d] = %d", root, i, got[i]);
        }
    }
    free(all);
}

static void test_allgather_alltoall(void) {
    int *all = malloc(sizeof *all * 3 * (size_t)size);
    int mine[3] = {val(rank, 0), val(rank, 1), val(rank, 2)};
    MPI_OK(MPI_Allgather(mine, 3, MPI_INT, all, 3, MPI_INT, MPI_COMM_WORLD));
    for (int r = 0; r < size; r++)
        for (int i = 0; i < 3; i++)
            CHECK(all[3 * r + i] == val(r, i), "Allgather [%d][%d] = %d", r, i,
                  all[3 * r + i]);
    for (int i = 0; i < 3 * size; i++)
        all[i] = i / 3 == rank ? val(rank, i % 3) : -1;
    MPI_OK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, 3, MPI_INT,
                         MPI_COMM_WORLD));
    for (int r = 0; r < size; r++)
        for (int i = 0; i < 3; i++)
            CHECK(all[3 * r + i] == val(r, i), "Allgather in place [%d][%d] = %d", r,
                  i, all[3 * r + i]);

    /* Alltoall: block d of rank s's send buffer lands as block s at d. */
    int *out = malloc(sizeof *out * 2 * (size_t)size);
    for (int d = 0; d < size; d++)
        for (int i = 0; i < 2; i++)
            out[2 * d + i] = 100 * rank + 10 * d + i;
    MPI_OK(MPI_Alltoall(out, 2, MPI_INT, all, 2, MPI_INT, MPI_COMM_WORLD));
    for (int s = 0; s < size; s++)
        for (int i = 0; i < 2; i++)
            CHECK(all[2 * s + i] == 100 * s + 10 * rank + i, "Alltoall [%d][%d] = %d",
                  s, i, all[2 * s + i]);
    MPI_OK(MPI_Alltoall(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, out, 2, MPI_INT,
                        MPI_COMM_WORLD));
    for (int s = 0; s < size; s++)
        for (int i = 0; i < 2; i++)
            CHECK(out[2 * s + i] == 100 * s + 10 * rank + i,
                  "Alltoall in place [%d][%d] = %d", s, i, out[2 * s + i]);

    /* MPI_DOUBLE_INT: items of 12 bytes in 16 (padding). */
    struct { double v; int i; } p = {rank * 1.5, -rank}, *ps;
    ps = malloc(sizeof *ps * (size_t)size);
    MPI_OK(MPI_Allgather(&p, 1, MPI_DOUBLE_INT, ps, 1, MPI_DOUBLE_INT,
                         MPI_COMM_WORLD));
    for (int r = 0; r < size; r++)
        CHECK(ps[r].v == r * 1.5 && ps[r].i == -r, "Allgather DOUBLE_INT [%d] = %g/%d",
              r, ps[r].v, ps[r].i);
    free(ps);
    free(out);
    free(all);
}

static void test_reduce_scatter_scan(void) {
    /* Reduce_scatter_block: rank r gets the sums of block r. */
    int *in = malloc(sizeof *in * 2 * (size_t)size);
    int out[2] = {-1, -1};
    for (int b = 0; b < size; b++)
        for (int i = 0; i < 2; i++)
            in[2 * b + i] = val(rank, 10 * b + i);
    MPI_OK(MPI_Reduce_scatter_block(in, out, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    for (int i = 0; i < 2; i++) {
        int want = 0;
        for (int r = 0; r < size; r++)
            want += val(r, 10 * rank + i);
        CHECK(out[i] == want, "Reduce_scatter_block [%d] = %d, want %d", i, out[i],
              want);
    }
    MPI_OK(MPI_Reduce_scatter_block(MPI_IN_PLACE, in, 2, MPI_INT, MPI_MAX,
                                    MPI_COMM_WORLD));
    for (int i = 0; i < 2; i++)
        CHECK(in[i] == val(size - 1, 10 * rank + i),
              "Reduce_scatter_block in place [%d] = %d", i, in[i]);
    free(in);

    /* Scan and Exscan of (r + 1) and of r * r. */
    int x[2] = {rank + 1, rank * rank}, s[2] = {-1, -1}, incl[2] = {0, 0};
    for (int r = 0; r <= rank; r++) {
        incl[0] += r + 1;
        incl[1] += r * r;
    }
    MPI_OK(MPI_Scan(x, s, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(s[0] == incl[0] && s[1] == incl[1], "Scan %d %d, want %d %d", s[0], s[1],
          incl[0], incl[1]);
    CHECK(x[0] == rank + 1 && x[1] == rank * rank, "Scan wrote its input");
    s[0] = x[0];
    s[1] = x[1];
    MPI_OK(MPI_Scan(MPI_IN_PLACE, s, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(s[0] == incl[0] && s[1] == incl[1], "Scan in place %d %d", s[0], s[1]);
    double f = rank + 2.0, fs;
    MPI_OK(MPI_Scan(&f, &fs, 1, MPI_DOUBLE, MPI_PROD, MPI_COMM_WORLD));
    double fw = 1;
    for (int r = 0; r <= rank; r++)
        fw *= r + 2.0;
    CHECK(fs == fw, "Scan PROD %g, want %g", fs, fw);

    s[0] = s[1] = -1;
    MPI_OK(MPI_Exscan(x, s, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    if (rank > 0)
        CHECK(s[0] == incl[0] - x[0] && s[1] == incl[1] - x[1], "Exscan %d %d",
              s[0], s[1]);
    CHECK(x[0] == rank + 1 && x[1] == rank * rank, "Exscan wrote its input");
    s[0] = x[0];
    s[1] = x[1];
    MPI_OK(MPI_Exscan(MPI_IN_PLACE, s, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    if (rank > 0)
        CHECK(s[0] == incl[0] - x[0] && s[1] == incl[1] - x[1],
              "Exscan in place %d %d", s[0], s[1]);
    int m = 10 - rank, mx = -1;
    MPI_OK(MPI_Exscan(&m, &mx, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (rank > 0)
        CHECK(mx == 10 - (rank - 1), "Exscan MIN %d", mx);
}

/* Zero items: every collective succeeds and writes nothing. */
static void test_empty(void) {
    int x[2] = {rank, rank}, y[2] = {7, 7};
    MPI_Comm w = MPI_COMM_WORLD;
    MPI_OK(MPI_Bcast(x, 0, MPI_INT, 0, w));
    MPI_OK(MPI_Reduce(x, y, 0, MPI_INT, MPI_SUM, 0, w));
    MPI_OK(MPI_Allreduce(x, y, 0, MPI_INT, MPI_SUM, w));
    MPI_OK(MPI_Scan(x, y, 0, MPI_INT, MPI_SUM, w));
    MPI_OK(MPI_Exscan(x, y, 0, MPI_INT, MPI_SUM, w));
    MPI_OK(MPI_Gather(x, 0, MPI_INT, y, 0, MPI_INT, 0, w));
    MPI_OK(MPI_Scatter(x, 0, MPI_INT, y, 0, MPI_INT, 0, w));
    MPI_OK(MPI_Allgather(x, 0, MPI_INT, y, 0, MPI_INT, w));
    MPI_OK(MPI_Alltoall(x, 0, MPI_INT, y, 0, MPI_INT, w));
    MPI_OK(MPI_Reduce_scatter_block(x, y, 0, MPI_INT, MPI_SUM, w));
    CHECK(y[0] == 7 && y[1] == 7 && x[0] == rank, "a collective of 0 items wrote");
}

/* Type signatures, not datatypes, must match: 2 ints against one item of
 * a 2-int contiguous type. */
static void test_signatures(void) {
    MPI_Datatype pair;
    int x[2] = {rank, rank}, b[2], got[2] = {-1, -1};
    int *g = malloc(sizeof *g * 2 * (size_t)size);
    MPI_OK(MPI_Type_contiguous(2, MPI_INT, &pair));
    MPI_OK(MPI_Type_commit(&pair));
    for (int root = 0; root < size; root++) {
        b[0] = rank == root ? 5 + root : -1;
        b[1] = rank == root ? 6 + root : -1;
        if (rank == root)
            MPI_OK(MPI_Bcast(b, 1, pair, root, MPI_COMM_WORLD));
        else
            MPI_OK(MPI_Bcast(b, 2, MPI_INT, root, MPI_COMM_WORLD));
        CHECK(b[0] == 5 + root && b[1] == 6 + root, "Bcast pair/2 ints: %d %d", b[0],
              b[1]);
        for (int i = 0; i < 2 * size; i++)
            g[i] = -1;
        MPI_OK(MPI_Gather(x, 2, MPI_INT, g, 1, pair, root, MPI_COMM_WORLD));
        if (rank == root)
            for (int i = 0; i < 2 * size; i++)
                CHECK(g[i] == i / 2, "Gather 2 ints/pair [%d] = %d", i, g[i]);
        for (int i = 0; i < 2 * size; i++)
            g[i] = i + root;
        MPI_OK(MPI_Scatter(g, 1, pair, got, 2, MPI_INT, root, MPI_COMM_WORLD));
        CHECK(got[0] == 2 * rank + root && got[1] == 2 * rank + 1 + root,
              "Scatter pair/2 ints: %d %d", got[0], got[1]);
    }
    MPI_OK(MPI_Allgather(x, 1, pair, g, 2, MPI_INT, MPI_COMM_WORLD));
    for (int i = 0; i < 2 * size; i++)
        CHECK(g[i] == i / 2, "Allgather pair/2 ints [%d] = %d", i, g[i]);
    MPI_OK(MPI_Type_free(&pair));
    free(g);
}

int main(int argc, char **argv) {
    MPI_OK(MPI_Init(&argc, &argv));
    check_min_ranks("coll");
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    test_barrier();
    test_bcast();
    test_reduce();
    test_allreduce();
    test_gather_scatter();
    test_allgather_alltoall();
    test_reduce_scatter_scan();
    test_empty();
    test_signatures();
    check_ok("coll");
    MPI_OK(MPI_Finalize());
    return 0;
}
