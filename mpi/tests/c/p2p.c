/* Point to point, blocking: Send/Recv, Sendrecv, MPI_ANY_SOURCE and
 * MPI_ANY_TAG with the status they fill in, MPI_Get_count (MPI_UNDEFINED
 * for a partial item), MPI_PROC_NULL as source and destination (also
 * through Irecv), non-overtaking order of messages, messages to oneself.
 * Non-blocking calls are in p2p_nb.c. */
#include "check.h"

static int rank, size;

/* Rank 0 sends to every other rank, which answers with value + 1. */
static void test_send_recv(void) {
    MPI_Status st;
    int n;
    if (rank == 0) {
        for (int p = 1; p < size; p++) {
            int out[3] = {p, 10 * p, 100 * p}, back[3] = {0, 0, 0};
            MPI_OK(MPI_Send(out, 3, MPI_INT, p, 7, MPI_COMM_WORLD));
            MPI_OK(MPI_Recv(back, 3, MPI_INT, p, 8, MPI_COMM_WORLD, &st));
            CHECK(st.MPI_SOURCE == p && st.MPI_TAG == 8, "reply status %d/%d",
                  st.MPI_SOURCE, st.MPI_TAG);
            MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
            CHECK(n == 3, "reply count %d", n);
            for (int i = 0; i < 3; i++)
                CHECK(back[i] == out[i] + 1, "reply[%d] = %d from %d", i,
                      back[i], p);
        }
    } else {
        int in[3];
        MPI_OK(MPI_Recv(in, 3, MPI_INT, 0, 7, MPI_COMM_WORLD, &st));
        CHECK(st.MPI_SOURCE == 0 && st.MPI_TAG == 7, "status %d/%d",
              st.MPI_SOURCE, st.MPI_TAG);
        CHECK(in[0] == rank && in[1] == 10 * rank && in[2] == 100 * rank,
              "got %d %d %d", in[0], in[1], in[2]);
        for (int i = 0; i < 3; i++)
            in[i]++;
        MPI_OK(MPI_Send(in, 3, MPI_INT, 0, 8, MPI_COMM_WORLD));
    }
    /* Doubles, a receive buffer larger than the message. */
    if (rank == 1) {
        double d[2] = {1.5, -2.25};
        MPI_OK(MPI_Send(d, 2, MPI_DOUBLE, 0, 9, MPI_COMM_WORLD));
    } else if (rank == 0) {
        double d[5] = {0, 0, 0, 0, 42};
        MPI_OK(MPI_Recv(d, 5, MPI_DOUBLE, 1, 9, MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Get_count(&st, MPI_DOUBLE, &n));
        CHECK(n == 2, "double count %d", n);
        CHECK(d[0] == 1.5 && d[1] == -2.25 && d[4] == 42, "doubles %g %g %g",
              d[0], d[1], d[4]);
    }
    /* A message of zero items. */
    if (rank == 1) {
        MPI_OK(MPI_Send(NULL, 0, MPI_INT, 0, 10, MPI_COMM_WORLD));
    } else if (rank == 0) {
        int x = 5;
        MPI_OK(MPI_Recv(&x, 1, MPI_INT, 1, 10, MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
        CHECK(n == 0 && x == 5, "empty message: count %d, buffer %d", n, x);
        CHECK(st.MPI_SOURCE == 1 && st.MPI_TAG == 10, "empty status %d/%d",
              st.MPI_SOURCE, st.MPI_TAG);
    }
}

/* Every rank but 0 sends (rank + 1) ints with tag 100 + rank; rank 0
 * receives them with wildcards and reads the sender from the status. */
static void test_wildcards(void) {
    MPI_Status st;
    if (rank != 0) {
        int v[16];
        for (int i = 0; i <= rank; i++)
            v[i] = rank * 1000 + i;
        MPI_OK(MPI_Send(v, rank + 1, MPI_INT, 0, 100 + rank, MPI_COMM_WORLD));
        return;
    }
    char *seen = calloc((size_t)size, 1);
    for (int k = 1; k < size; k++) {
        int v[16], n = -1;
        memset(v, 0, sizeof v);
        MPI_OK(MPI_Recv(v, 16, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG,
                        MPI_COMM_WORLD, &st));
        int s = st.MPI_SOURCE;
        CHECK(s >= 1 && s < size && !seen[s], "source %d", s);
        seen[s] = 1;
        CHECK(st.MPI_TAG == 100 + s, "tag %d from %d", st.MPI_TAG, s);
        MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
        CHECK(n == s + 1, "count %d from %d", n, s);
        for (int i = 0; i < n; i++)
            CHECK(v[i] == s * 1000 + i, "v[%d] = %d from %d", i, v[i], s);
    }
    free(seen);
}

/* Three ints received as pairs of ints: 1.5 items, MPI_UNDEFINED (the
 * standard's example). ANY_SOURCE with a given tag, a given source with
 * ANY_TAG. */
static void test_get_count(void) {
    MPI_Status st;
    MPI_Datatype pair;
    int n;
    MPI_OK(MPI_Type_contiguous(2, MPI_INT, &pair));
    MPI_OK(MPI_Type_commit(&pair));
    if (rank == 1) {
        int v[4] = {1, 2, 3, 4};
        MPI_OK(MPI_Send(v, 3, MPI_INT, 0, 21, MPI_COMM_WORLD));
        MPI_OK(MPI_Send(v, 4, MPI_INT, 0, 22, MPI_COMM_WORLD));
        MPI_OK(MPI_Send(v, 5, MPI_BYTE, 0, 23, MPI_COMM_WORLD));
    } else if (rank == 0) {
        int v[4] = {0, 0, 0, 0};
        char b[8];
        MPI_OK(MPI_Recv(v, 2, pair, MPI_ANY_SOURCE, 21, MPI_COMM_WORLD, &st));
        CHECK(st.MPI_SOURCE == 1 && st.MPI_TAG == 21, "status %d/%d",
              st.MPI_SOURCE, st.MPI_TAG);
        CHECK(v[0] == 1 && v[1] == 2 && v[2] == 3 && v[3] == 0,
              "3 ints as pairs: %d %d %d %d", v[0], v[1], v[2], v[3]);
        MPI_OK(MPI_Get_count(&st, pair, &n));
        CHECK(n == MPI_UNDEFINED, "3 ints as pairs: count %d, want MPI_UNDEFINED",
              n);
        MPI_OK(MPI_Recv(v, 2, pair, 1, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
        CHECK(st.MPI_SOURCE == 1 && st.MPI_TAG == 22, "status %d/%d",
              st.MPI_SOURCE, st.MPI_TAG);
        MPI_OK(MPI_Get_count(&st, pair, &n));
        CHECK(n == 2, "4 ints as pairs: count %d", n);
        MPI_OK(MPI_Recv(b, 8, MPI_BYTE, 1, 23, MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Get_count(&st, MPI_BYTE, &n));
        CHECK(n == 5, "5 bytes: count %d", n);
    }
    MPI_OK(MPI_Type_free(&pair));
}

static void test_proc_null(void) {
    MPI_Status st;
    MPI_Request rq;
    int x = 77, y = 88, flag = 0;
    MPI_OK(MPI_Send(&x, 1, MPI_INT, MPI_PROC_NULL, 3, MPI_COMM_WORLD));
    MPI_OK(MPI_Recv(&y, 1, MPI_INT, MPI_PROC_NULL, 3, MPI_COMM_WORLD, &st));
    CHECK(y == 88, "a receive from MPI_PROC_NULL wrote %d", y);
    check_proc_null_status(&st, "Recv(PROC_NULL)");
    MPI_OK(MPI_Irecv(&y, 1, MPI_INT, MPI_PROC_NULL, MPI_ANY_TAG, MPI_COMM_WORLD,
                     &rq));
    MPI_OK(MPI_Wait(&rq, &st));
    CHECK(rq == MPI_REQUEST_NULL, "request not freed");
    check_proc_null_status(&st, "Irecv(PROC_NULL)+Wait");
    MPI_OK(MPI_Irecv(&y, 1, MPI_INT, MPI_PROC_NULL, 5, MPI_COMM_WORLD, &rq));
    while (!flag)
        MPI_OK(MPI_Test(&rq, &flag, &st));
    check_proc_null_status(&st, "Irecv(PROC_NULL)+Test");
    MPI_OK(MPI_Isend(&x, 1, MPI_INT, MPI_PROC_NULL, 3, MPI_COMM_WORLD, &rq));
    MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    MPI_OK(MPI_Sendrecv(&x, 1, MPI_INT, MPI_PROC_NULL, 1, &y, 1, MPI_INT,
                        MPI_PROC_NULL, 1, MPI_COMM_WORLD, &st));
    CHECK(y == 88, "Sendrecv from MPI_PROC_NULL wrote %d", y);
    check_proc_null_status(&st, "Sendrecv(PROC_NULL, PROC_NULL)");
    /* A non-periodic shift: the ends talk to MPI_PROC_NULL. */
    int up = rank + 1 < size ? rank + 1 : MPI_PROC_NULL;
    int down = rank > 0 ? rank - 1 : MPI_PROC_NULL;
    int out = 500 + rank, in = -1;
    MPI_OK(MPI_Sendrecv(&out, 1, MPI_INT, up, 4, &in, 1, MPI_INT, down, 4,
                        MPI_COMM_WORLD, &st));
    if (down == MPI_PROC_NULL) {
        CHECK(in == -1, "shift: rank 0 got %d", in);
        check_proc_null_status(&st, "shift at rank 0");
    } else {
        CHECK(in == 500 + down, "shift: got %d", in);
        CHECK(st.MPI_SOURCE == down && st.MPI_TAG == 4, "shift status %d/%d",
              st.MPI_SOURCE, st.MPI_TAG);
    }
}

/* Rank 1 sends 20 messages with one tag, then alternating tags; rank 0
 * receives in order (by tag, and by MPI_ANY_TAG). */
static void test_order(void) {
    MPI_Status st;
    if (rank == 1) {
        for (int i = 0; i < 20; i++)
            MPI_OK(MPI_Send(&i, 1, MPI_INT, 0, 30, MPI_COMM_WORLD));
        for (int i = 0; i < 10; i++)
            MPI_OK(MPI_Send(&i, 1, MPI_INT, 0, 31 + i % 2, MPI_COMM_WORLD));
    } else if (rank == 0) {
        int v;
        for (int i = 0; i < 20; i++) {
            MPI_OK(MPI_Recv(&v, 1, MPI_INT, 1, 30, MPI_COMM_WORLD, &st));
            CHECK(v == i, "message %d arrived as %d", i, v);
        }
        /* Tag 32 first: 1, 3, 5, 7, 9; then ANY_TAG: 0, 2, 4, 6, 8. */
        for (int i = 1; i < 10; i += 2) {
            MPI_OK(MPI_Recv(&v, 1, MPI_INT, 1, 32, MPI_COMM_WORLD, &st));
            CHECK(v == i, "tag 32: want %d, got %d", i, v);
        }
        for (int i = 0; i < 10; i += 2) {
            MPI_OK(MPI_Recv(&v, 1, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG,
                            MPI_COMM_WORLD, &st));
            CHECK(v == i && st.MPI_TAG == 31, "ANY_TAG: want %d/31, got %d/%d", i,
                  v, st.MPI_TAG);
        }
    }
}

/* Sendrecv around a ring both ways; messages to oneself. */
static void test_sendrecv(void) {
    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    MPI_Status st;
    MPI_Request rq;
    int out[3] = {rank, -rank, 7}, in[3] = {0, 0, 0}, n;
    MPI_OK(MPI_Sendrecv(out, 3, MPI_INT, right, 60, in, 3, MPI_INT, left, 60,
                        MPI_COMM_WORLD, &st));
    CHECK(in[0] == left && in[1] == -left && in[2] == 7, "Sendrecv right");
    CHECK(st.MPI_SOURCE == left && st.MPI_TAG == 60, "Sendrecv status");
    MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
    CHECK(n == 3, "Sendrecv count %d", n);
    MPI_OK(MPI_Sendrecv(out, 2, MPI_INT, left, 61, in, 3, MPI_INT,
                        MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
    CHECK(in[0] == right && in[1] == -right, "Sendrecv left");
    CHECK(st.MPI_SOURCE == right && st.MPI_TAG == 61, "Sendrecv wildcard status");
    MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
    CHECK(n == 2, "Sendrecv count %d", n);
    /* Nothing else may reach the wildcard receive above. */
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));

    /* To oneself. */
    double d = rank + 0.5, e = 0;
    MPI_OK(MPI_Isend(&d, 1, MPI_DOUBLE, rank, 62, MPI_COMM_WORLD, &rq));
    MPI_OK(MPI_Recv(&e, 1, MPI_DOUBLE, rank, 62, MPI_COMM_WORLD, &st));
    MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    CHECK(e == rank + 0.5 && st.MPI_SOURCE == rank, "self message %g", e);
    e = 0;
    MPI_OK(MPI_Sendrecv(&d, 1, MPI_DOUBLE, rank, 63, &e, 1, MPI_DOUBLE, rank, 63,
                        MPI_COMM_WORLD, &st));
    CHECK(e == rank + 0.5, "self Sendrecv %g", e);
}

int main(int argc, char **argv) {
    MPI_OK(MPI_Init(&argc, &argv));
    check_min_ranks("p2p");
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    /* A barrier between tests: a wildcard receive of one test must not
     * match a message of the next. */
    void (*tests[])(void) = {test_send_recv, test_wildcards, test_get_count,
                             test_proc_null, test_order, test_sendrecv};
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        tests[i]();
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    }
    check_ok("p2p");
    MPI_OK(MPI_Finalize());
    return 0;
}
