/* Non-blocking collectives: Ibarrier, Ibcast, Ireduce, Iallreduce,
 * Igather, Iscatter, Iallgather, Ialltoall, Ireduce_scatter_block, Iscan,
 * Iexscan, each completed by MPI_Wait and by a loop of MPI_Test, with
 * every root and with MPI_IN_PLACE where allowed; several in flight at
 * once, completed by Waitall, Testall and Waitany. */
#include "check.h"

static int rank, size;

static int val(int r, int i) { return 1000 * r + i; }

/* Completes a request: by Wait (mode 0) or by a Test loop (mode 1). */
static void complete(MPI_Request *rq, int mode) {
    int flag = 0;
    if (mode == 0) {
        MPI_OK(MPI_Wait(rq, MPI_STATUS_IGNORE));
    } else {
        while (!flag)
            MPI_OK(MPI_Test(rq, &flag, MPI_STATUS_IGNORE));
    }
    CHECK(*rq == MPI_REQUEST_NULL, "completion left the request (mode %d)", mode);
}

static void test_ibarrier(int mode) {
    MPI_Request rq;
    MPI_OK(MPI_Ibarrier(MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    /* An Ibarrier cannot complete before every rank entered it: the
     * others test theirs once before rank 0 enters, which it does only
     * after a message from each of them. */
    int token = 0;
    if (rank != 0) {
        int flag = 1;
        MPI_OK(MPI_Ibarrier(MPI_COMM_WORLD, &rq));
        MPI_OK(MPI_Test(&rq, &flag, MPI_STATUS_IGNORE));
        CHECK(!flag, "Ibarrier completed before rank 0 entered it");
        /* Tell rank 0 to enter. */
        MPI_OK(MPI_Send(&token, 1, MPI_INT, 0, 1, MPI_COMM_WORLD));
        complete(&rq, mode);
    } else {
        for (int p = 1; p < size; p++)
            MPI_OK(MPI_Recv(&token, 1, MPI_INT, p, 1, MPI_COMM_WORLD,
                            MPI_STATUS_IGNORE));
        MPI_OK(MPI_Ibarrier(MPI_COMM_WORLD, &rq));
        complete(&rq, mode);
    }
}

static void test_ibcast_ireduce(int mode) {
    for (int root = 0; root < size; root++) {
        MPI_Request rq;
        int v[4];
        for (int i = 0; i < 4; i++)
            v[i] = rank == root ? val(root, i) : -1;
        MPI_OK(MPI_Ibcast(v, 4, MPI_INT, root, MPI_COMM_WORLD, &rq));
        complete(&rq, mode);
        for (int i = 0; i < 4; i++)
            CHECK(v[i] == val(root, i), "Ibcast root %d: [%d] = %d", root, i, v[i]);

        int in[3], out[3] = {-1, -1, -1}, want[3] = {0, 0, 0};
        for (int i = 0; i < 3; i++) {
            in[i] = val(rank, i);
            for (int r = 0; r < size; r++)
                want[i] += val(r, i);
        }
        MPI_OK(MPI_Ireduce(in, rank == root ? out : NULL, 3, MPI_INT, MPI_SUM, root,
                           MPI_COMM_WORLD, &rq));
        complete(&rq, mode);
        if (rank == root)
            for (int i = 0; i < 3; i++)
                CHECK(out[i] == want[i], "Ireduce root %d: [%d] = %d, want %d", root,
                      i, out[i], want[i]);
        /* In place at the root. */
        for (int i = 0; i < 3; i++)
            out[i] = val(rank, i);
        if (rank == root)
            MPI_OK(MPI_Ireduce(MPI_IN_PLACE, out, 3, MPI_INT, MPI_MAX, root,
                               MPI_COMM_WORLD, &rq));
        else
            MPI_OK(MPI_Ireduce(out, NULL, 3, MPI_INT, MPI_MAX, root, MPI_COMM_WORLD,
                               &rq));
        complete(&rq, mode);
        for (int i = 0; i < 3; i++)
            CHECK(out[i] == (rank == root ? val(size - 1, i) : val(rank, i)),
                  "Ireduce in place root %d: [%d] = %d", root, i, out[i]);
    }
}

static void test_iallreduce_scan(int mode) {
    MPI_Request rq;
    int in[2] = {rank + 1, 2 * rank}, out[2] = {-1, -1};
    int sum[2] = {0, 0}, incl[2] = {0, 0};
    for (int r = 0; r < size; r++) {
        sum[0] += r + 1;
        sum[1] += 2 * r;
        if (r <= rank) {
            incl[0] += r + 1;
            incl[1] += 2 * r;
        }
    }
    MPI_OK(MPI_Iallreduce(in, out, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    CHECK(out[0] == sum[0] && out[1] == sum[1], "Iallreduce %d %d", out[0], out[1]);
    out[0] = in[0];
    out[1] = in[1];
    MPI_OK(MPI_Iallreduce(MPI_IN_PLACE, out, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD,
                          &rq));
    complete(&rq, mode);
    CHECK(out[0] == sum[0] && out[1] == sum[1], "Iallreduce in place %d %d", out[0],
          out[1]);
    double d = rank + 1.0, dm = 0;
    MPI_OK(MPI_Iallreduce(&d, &dm, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    CHECK(dm == size, "Iallreduce MAX %g", dm);

    out[0] = out[1] = -1;
    MPI_OK(MPI_Iscan(in, out, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    CHECK(out[0] == incl[0] && out[1] == incl[1], "Iscan %d %d", out[0], out[1]);
    out[0] = in[0];
    out[1] = in[1];
    MPI_OK(MPI_Iscan(MPI_IN_PLACE, out, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    CHECK(out[0] == incl[0] && out[1] == incl[1], "Iscan in place %d %d", out[0],
          out[1]);

    out[0] = out[1] = -1;
    MPI_OK(MPI_Iexscan(in, out, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    if (rank > 0)
        CHECK(out[0] == incl[0] - in[0] && out[1] == incl[1] - in[1],
              "Iexscan %d %d", out[0], out[1]);
    out[0] = in[0];
    out[1] = in[1];
    MPI_OK(MPI_Iexscan(MPI_IN_PLACE, out, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    if (rank > 0)
        CHECK(out[0] == incl[0] - in[0] && out[1] == incl[1] - in[1],
              "Iexscan in place %d %d", out[0], out[1]);

    /* Ireduce_scatter_block: rank r gets the sums of block r. */
    int *blk = malloc(sizeof *blk * 2 * (size_t)size);
    for (int b = 0; b < size; b++)
        for (int i = 0; i < 2; i++)
            blk[2 * b + i] = val(rank, 10 * b + i);
    out[0] = out[1] = -1;
    MPI_OK(MPI_Ireduce_scatter_block(blk, out, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD,
                                     &rq));
    complete(&rq, mode);
    for (int i = 0; i < 2; i++) {
        int want = 0;
        for (int r = 0; r < size; r++)
            want += val(r, 10 * rank + i);
        CHECK(out[i] == want, "Ireduce_scatter_block [%d] = %d, want %d", i, out[i],
              want);
    }
    MPI_OK(MPI_Ireduce_scatter_block(MPI_IN_PLACE, blk, 2, MPI_INT, MPI_MIN,
                                     MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    for (int i = 0; i < 2; i++)
        CHECK(blk[i] == val(0, 10 * rank + i),
              "Ireduce_scatter_block in place [%d] = %d", i, blk[i]);
    free(blk);
}

static void test_igather_iscatter(int mode) {
    int *all = malloc(sizeof *all * 2 * (size_t)size);
    for (int root = 0; root < size; root++) {
        MPI_Request rq;
        int mine[2] = {val(rank, 0), val(rank, 1)};
        for (int i = 0; i < 2 * size; i++)
            all[i] = -1;
        MPI_OK(MPI_Igather(mine, 2, MPI_INT, rank == root ? all : NULL, 2, MPI_INT,
                           root, MPI_COMM_WORLD, &rq));
        complete(&rq, mode);
        if (rank == root)
            for (int i = 0; i < 2 * size; i++)
                CHECK(all[i] == val(i / 2, i % 2), "Igather root %d: [%d] = %d", root,
                      i, all[i]);
        for (int i = 0; i < 2 * size; i++)
            all[i] = i / 2 == rank ? val(rank, i % 2) : -1;
        if (rank == root)
            MPI_OK(MPI_Igather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, 2, MPI_INT,
                               root, MPI_COMM_WORLD, &rq));
        else
            MPI_OK(MPI_Igather(mine, 2, MPI_INT, NULL, 0, MPI_DATATYPE_NULL, root,
                               MPI_COMM_WORLD, &rq));
        complete(&rq, mode);
        if (rank == root)
            for (int i = 0; i < 2 * size; i++)
                CHECK(all[i] == val(i / 2, i % 2),
                      "Igather in place root %d: [%d] = %d", root, i, all[i]);

        int got[2] = {-1, -1};
        for (int i = 0; i < 2 * size; i++)
            all[i] = rank == root ? val(i / 2, i % 2) + root : -1;
        MPI_OK(MPI_Iscatter(rank == root ? all : NULL, 2, MPI_INT, got, 2, MPI_INT,
                            root, MPI_COMM_WORLD, &rq));
        complete(&rq, mode);
        for (int i = 0; i < 2; i++)
            CHECK(got[i] == val(rank, i) + root, "Iscatter root %d: [%d] = %d", root,
                  i, got[i]);
        got[0] = got[1] = -1;
        if (rank == root)
            MPI_OK(MPI_Iscatter(all, 2, MPI_INT, MPI_IN_PLACE, 0, MPI_DATATYPE_NULL,
                                root, MPI_COMM_WORLD, &rq));
        else
            MPI_OK(MPI_Iscatter(NULL, 0, MPI_DATATYPE_NULL, got, 2, MPI_INT, root,
                                MPI_COMM_WORLD, &rq));
        complete(&rq, mode);
        if (rank == root) {
            for (int i = 0; i < 2 * size; i++)
                CHECK(all[i] == val(i / 2, i % 2) + root,
                      "Iscatter in place changed the root's buffer at %d", i);
        } else {
            for (int i = 0; i < 2; i++)
                CHECK(got[i] == val(rank, i) + root,
                      "Iscatter in place root %d: [%d] = %d", root, i, got[i]);
        }
    }
    free(all);
}

static void test_iallgather_ialltoall(int mode) {
    MPI_Request rq;
    int *all = malloc(sizeof *all * 3 * (size_t)size);
    int mine[3] = {val(rank, 0), val(rank, 1), val(rank, 2)};
    MPI_OK(MPI_Iallgather(mine, 3, MPI_INT, all, 3, MPI_INT, MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    for (int i = 0; i < 3 * size; i++)
        CHECK(all[i] == val(i / 3, i % 3), "Iallgather [%d] = %d", i, all[i]);
    for (int i = 0; i < 3 * size; i++)
        all[i] = i / 3 == rank ? val(rank, i % 3) : -1;
    MPI_OK(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, 3, MPI_INT,
                          MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    for (int i = 0; i < 3 * size; i++)
        CHECK(all[i] == val(i / 3, i % 3), "Iallgather in place [%d] = %d", i, all[i]);

    int *out = malloc(sizeof *out * 2 * (size_t)size);
    for (int i = 0; i < 2 * size; i++)
        out[i] = 100 * rank + 10 * (i / 2) + i % 2;
    MPI_OK(MPI_Ialltoall(out, 2, MPI_INT, all, 2, MPI_INT, MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    for (int i = 0; i < 2 * size; i++)
        CHECK(all[i] == 100 * (i / 2) + 10 * rank + i % 2, "Ialltoall [%d] = %d", i,
              all[i]);
    MPI_OK(MPI_Ialltoall(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, out, 2, MPI_INT,
                         MPI_COMM_WORLD, &rq));
    complete(&rq, mode);
    for (int i = 0; i < 2 * size; i++)
        CHECK(out[i] == 100 * (i / 2) + 10 * rank + i % 2,
              "Ialltoall in place [%d] = %d", i, out[i]);
    free(out);
    free(all);
}

/* Several in flight, completed together. */
static void test_overlap(void) {
    MPI_Request rq[4];
    int b = rank == 0 ? 4242 : -1, s = rank, sum = -1, idx;
    int *g = malloc(sizeof *g * (size_t)size);
    MPI_OK(MPI_Ibcast(&b, 1, MPI_INT, 0, MPI_COMM_WORLD, &rq[0]));
    MPI_OK(MPI_Iallreduce(&s, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &rq[1]));
    MPI_OK(MPI_Iallgather(&s, 1, MPI_INT, g, 1, MPI_INT, MPI_COMM_WORLD, &rq[2]));
    MPI_OK(MPI_Ibarrier(MPI_COMM_WORLD, &rq[3]));
    MPI_OK(MPI_Waitall(4, rq, MPI_STATUSES_IGNORE));
    CHECK(b == 4242 && sum == size * (size - 1) / 2, "Waitall: %d %d", b, sum);
    for (int r = 0; r < size; r++)
        CHECK(g[r] == r, "Waitall gather [%d] = %d", r, g[r]);

    b = rank == size - 1 ? 77 : -1;
    sum = -1;
    MPI_OK(MPI_Ibcast(&b, 1, MPI_INT, size - 1, MPI_COMM_WORLD, &rq[0]));
    MPI_OK(MPI_Iallreduce(&s, &sum, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &rq[1]));
    int flag = 0;
    while (!flag)
        MPI_OK(MPI_Testall(2, rq, &flag, MPI_STATUSES_IGNORE));
    CHECK(b == 77 && sum == size - 1, "Testall: %d %d", b, sum);

    b = rank == 1 ? 99 : -1;
    sum = -1;
    MPI_OK(MPI_Ibcast(&b, 1, MPI_INT, 1, MPI_COMM_WORLD, &rq[0]));
    MPI_OK(MPI_Iallreduce(&s, &sum, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &rq[1]));
    for (int k = 0; k < 2; k++) {
        MPI_OK(MPI_Waitany(2, rq, &idx, MPI_STATUS_IGNORE));
        CHECK(idx == 0 || idx == 1, "Waitany index %d", idx);
        CHECK(rq[idx] == MPI_REQUEST_NULL, "Waitany left request %d", idx);
    }
    CHECK(b == 99 && sum == 0, "Waitany: %d %d", b, sum);
    free(g);
}

int main(int argc, char **argv) {
    MPI_OK(MPI_Init(&argc, &argv));
    check_min_ranks("icoll");
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    for (int mode = 0; mode < 2; mode++) {
        test_ibarrier(mode);
        test_ibcast_ireduce(mode);
        test_iallreduce_scan(mode);
        test_igather_iscatter(mode);
        test_iallgather_ialltoall(mode);
    }
    test_overlap();
    check_ok("icoll");
    MPI_OK(MPI_Finalize());
    return 0;
}
