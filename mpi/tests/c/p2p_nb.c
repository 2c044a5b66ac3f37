/* Point to point, non-blocking: Isend/Irecv completed by Wait, Waitall,
 * Test, Testall and Waitany; receives matched in the order they were
 * posted; null requests (empty statuses); MPI_Request_free. */
#include "check.h"

static int rank, size;

/* Receives match messages in the order they were posted, whatever the
 * order they are completed in: rank 0 posts ten Irecvs and waits for them
 * last to first; a wildcard receive posted first takes the first message
 * a later specific receive would also match; and a blocking Recv posted
 * after an Irecv does not take the Irecv's message. */
static void test_posted_order(void) {
    MPI_Request rq[10];
    if (rank == 1) {
        int v[12];
        for (int i = 0; i < 10; i++) {
            v[i] = i;
            MPI_OK(MPI_Isend(&v[i], 1, MPI_INT, 0, 33, MPI_COMM_WORLD, &rq[i]));
        }
        MPI_OK(MPI_Waitall(10, rq, MPI_STATUSES_IGNORE));
        v[10] = 10;
        v[11] = 11;
        MPI_OK(MPI_Send(&v[10], 1, MPI_INT, 0, 34, MPI_COMM_WORLD));
        MPI_OK(MPI_Send(&v[11], 1, MPI_INT, 0, 34, MPI_COMM_WORLD));
        MPI_OK(MPI_Send(&v[10], 1, MPI_INT, 0, 35, MPI_COMM_WORLD));
        MPI_OK(MPI_Send(&v[11], 1, MPI_INT, 0, 35, MPI_COMM_WORLD));
    } else if (rank == 0) {
        int v[10], a = -1, b = -1;
        MPI_Status st;
        for (int i = 0; i < 10; i++) {
            v[i] = -1;
            MPI_OK(MPI_Irecv(&v[i], 1, MPI_INT, i % 2 ? 1 : MPI_ANY_SOURCE, 33,
                             MPI_COMM_WORLD, &rq[i]));
        }
        for (int i = 9; i >= 0; i--)
            MPI_OK(MPI_Wait(&rq[i], MPI_STATUS_IGNORE));
        for (int i = 0; i < 10; i++)
            CHECK(v[i] == i, "receive %d of 10 (posted in order, waited in "
                  "reverse) got message %d", i, v[i]);
        MPI_OK(MPI_Irecv(&a, 1, MPI_INT, 1, MPI_ANY_TAG, MPI_COMM_WORLD, &rq[0]));
        MPI_OK(MPI_Irecv(&b, 1, MPI_INT, MPI_ANY_SOURCE, 34, MPI_COMM_WORLD, &rq[1]));
        MPI_OK(MPI_Wait(&rq[1], &st));
        MPI_OK(MPI_Wait(&rq[0], MPI_STATUS_IGNORE));
        CHECK(a == 10 && b == 11, "the first posted receive got message %d, the "
              "second %d: want 10 and 11", a, b);
        /* An Irecv posted before a blocking Recv gets the first message. */
        a = b = -1;
        MPI_OK(MPI_Irecv(&a, 1, MPI_INT, MPI_ANY_SOURCE, 35, MPI_COMM_WORLD, &rq[0]));
        MPI_OK(MPI_Recv(&b, 1, MPI_INT, 1, 35, MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Wait(&rq[0], MPI_STATUS_IGNORE));
        CHECK(a == 10 && b == 11, "an Irecv posted before a Recv got message %d, "
              "the Recv %d: want 10 and 11", a, b);
    }
}

/* A ring: Irecv from the left, Isend to the right, completed by Wait,
 * Waitall, a Test loop, Testall and Waitany. */
static void test_nonblocking(void) {
    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    MPI_Request rq[4];
    MPI_Status sts[4];
    int out[2] = {rank, rank * rank}, in[2] = {-1, -1}, n;

    MPI_OK(MPI_Irecv(in, 2, MPI_INT, left, 40, MPI_COMM_WORLD, &rq[0]));
    MPI_OK(MPI_Isend(out, 2, MPI_INT, right, 40, MPI_COMM_WORLD, &rq[1]));
    MPI_OK(MPI_Wait(&rq[1], MPI_STATUS_IGNORE));
    MPI_OK(MPI_Wait(&rq[0], &sts[0]));
    CHECK(rq[0] == MPI_REQUEST_NULL && rq[1] == MPI_REQUEST_NULL,
          "Wait left a request");
    CHECK(in[0] == left && in[1] == left * left, "Wait: %d %d", in[0], in[1]);
    CHECK(sts[0].MPI_SOURCE == left && sts[0].MPI_TAG == 40, "Wait status");
    MPI_OK(MPI_Get_count(&sts[0], MPI_INT, &n));
    CHECK(n == 2, "Wait count %d", n);

    /* Waitall, with statuses in the order of the requests. */
    int a = -1, b = -1, oa = rank + 1000, ob = rank + 2000;
    MPI_OK(MPI_Irecv(&a, 1, MPI_INT, left, 41, MPI_COMM_WORLD, &rq[0]));
    MPI_OK(MPI_Irecv(&b, 1, MPI_INT, MPI_ANY_SOURCE, 42, MPI_COMM_WORLD, &rq[1]));
    MPI_OK(MPI_Isend(&ob, 1, MPI_INT, right, 42, MPI_COMM_WORLD, &rq[2]));
    MPI_OK(MPI_Isend(&oa, 1, MPI_INT, right, 41, MPI_COMM_WORLD, &rq[3]));
    MPI_OK(MPI_Waitall(4, rq, sts));
    for (int i = 0; i < 4; i++)
        CHECK(rq[i] == MPI_REQUEST_NULL, "Waitall left request %d", i);
    CHECK(a == left + 1000 && b == left + 2000, "Waitall: %d %d", a, b);
    CHECK(sts[0].MPI_SOURCE == left && sts[0].MPI_TAG == 41, "status 0: %d/%d",
          sts[0].MPI_SOURCE, sts[0].MPI_TAG);
    CHECK(sts[1].MPI_SOURCE == left && sts[1].MPI_TAG == 42, "status 1: %d/%d",
          sts[1].MPI_SOURCE, sts[1].MPI_TAG);

    /* Test: incomplete until the sender sends, which it does only after
     * a barrier; then a Test loop completes it. */
    int flag = 1, v = -1;
    MPI_OK(MPI_Irecv(&v, 1, MPI_INT, left, 43, MPI_COMM_WORLD, &rq[0]));
    MPI_OK(MPI_Test(&rq[0], &flag, &sts[0]));
    CHECK(!flag, "Test completed a receive before its message was sent");
    CHECK(rq[0] != MPI_REQUEST_NULL, "an incomplete Test freed the request");
    MPI_OK(MPI_Testall(1, rq, &flag, sts));
    CHECK(!flag, "Testall completed a receive before its message was sent");
    CHECK(rq[0] != MPI_REQUEST_NULL, "an incomplete Testall freed the request");
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    int x = rank + 3000;
    MPI_OK(MPI_Send(&x, 1, MPI_INT, right, 43, MPI_COMM_WORLD));
    flag = 0;
    while (!flag)
        MPI_OK(MPI_Test(&rq[0], &flag, &sts[0]));
    CHECK(rq[0] == MPI_REQUEST_NULL, "Test left the request");
    CHECK(v == left + 3000 && sts[0].MPI_SOURCE == left && sts[0].MPI_TAG == 43,
          "Test: %d from %d/%d", v, sts[0].MPI_SOURCE, sts[0].MPI_TAG);

    /* Testall over two receives and a null request. */
    a = b = -1;
    MPI_OK(MPI_Irecv(&a, 1, MPI_INT, left, 44, MPI_COMM_WORLD, &rq[0]));
    rq[1] = MPI_REQUEST_NULL;
    MPI_OK(MPI_Irecv(&b, 1, MPI_INT, left, 45, MPI_COMM_WORLD, &rq[2]));
    oa = rank + 4000;
    ob = rank + 5000;
    MPI_OK(MPI_Send(&ob, 1, MPI_INT, right, 45, MPI_COMM_WORLD));
    MPI_OK(MPI_Send(&oa, 1, MPI_INT, right, 44, MPI_COMM_WORLD));
    flag = 0;
    while (!flag)
        MPI_OK(MPI_Testall(3, rq, &flag, sts));
    for (int i = 0; i < 3; i++)
        CHECK(rq[i] == MPI_REQUEST_NULL, "Testall left request %d", i);
    CHECK(a == left + 4000 && b == left + 5000, "Testall: %d %d", a, b);
    CHECK(sts[0].MPI_TAG == 44 && sts[2].MPI_TAG == 45 &&
              sts[0].MPI_SOURCE == left && sts[2].MPI_SOURCE == left,
          "Testall statuses %d/%d %d/%d", sts[0].MPI_SOURCE, sts[0].MPI_TAG,
          sts[2].MPI_SOURCE, sts[2].MPI_TAG);
    check_empty_status(&sts[1], "Testall status of a null request");
}

/* Rank 0 waits for one message of every other rank with Waitany. */
static void test_waitany(void) {
    MPI_Status st;
    int idx;
    if (rank != 0) {
        int v = rank * 7;
        MPI_OK(MPI_Send(&v, 1, MPI_INT, 0, 50 + rank, MPI_COMM_WORLD));
    } else {
        MPI_Request *rq = malloc(sizeof *rq * (size_t)size);
        int *v = malloc(sizeof *v * (size_t)size);
        char *done = calloc((size_t)size, 1);
        rq[0] = MPI_REQUEST_NULL;
        for (int p = 1; p < size; p++) {
            v[p] = -1;
            MPI_OK(MPI_Irecv(&v[p], 1, MPI_INT, p, 50 + p, MPI_COMM_WORLD, &rq[p]));
        }
        for (int k = 1; k < size; k++) {
            MPI_OK(MPI_Waitany(size, rq, &idx, &st));
            CHECK(idx >= 1 && idx < size && !done[idx], "Waitany index %d", idx);
            done[idx] = 1;
            CHECK(rq[idx] == MPI_REQUEST_NULL, "Waitany left request %d", idx);
            CHECK(v[idx] == idx * 7, "Waitany value %d at %d", v[idx], idx);
            CHECK(st.MPI_SOURCE == idx && st.MPI_TAG == 50 + idx,
                  "Waitany status %d/%d at %d", st.MPI_SOURCE, st.MPI_TAG, idx);
        }
        MPI_OK(MPI_Waitany(size, rq, &idx, &st));
        CHECK(idx == MPI_UNDEFINED, "Waitany of null requests: index %d", idx);
        check_empty_status(&st, "Waitany of null requests");
        free(rq);
        free(v);
        free(done);
    }
}

/* Null requests complete at once with an empty status; a freed send
 * request still delivers; a 1 MiB message by Irecv. */
static void test_requests(void) {
    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    MPI_Status st;
    MPI_Request rq;
    int n, flag = 0;

    /* Null requests: Wait and Test complete at once with an empty status. */
    rq = MPI_REQUEST_NULL;
    MPI_OK(MPI_Wait(&rq, &st));
    check_empty_status(&st, "Wait(MPI_REQUEST_NULL)");
    MPI_OK(MPI_Test(&rq, &flag, &st));
    CHECK(flag, "Test(MPI_REQUEST_NULL) flag %d", flag);
    check_empty_status(&st, "Test(MPI_REQUEST_NULL)");
    MPI_Request none[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    MPI_OK(MPI_Waitall(2, none, MPI_STATUSES_IGNORE));
    MPI_OK(MPI_Waitall(0, NULL, MPI_STATUSES_IGNORE));

    /* A send request freed before completion still delivers. */
    int token = 900 + rank, got = -1;
    MPI_OK(MPI_Isend(&token, 1, MPI_INT, right, 64, MPI_COMM_WORLD, &rq));
    MPI_OK(MPI_Request_free(&rq));
    CHECK(rq == MPI_REQUEST_NULL, "Request_free left the handle");
    MPI_OK(MPI_Recv(&got, 1, MPI_INT, left, 64, MPI_COMM_WORLD, &st));
    CHECK(got == 900 + left, "freed send delivered %d", got);
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD)); /* token stays alive until here */

    /* A larger message (1 MiB) around the ring. */
    int big = 1 << 18;
    int *bo = malloc(sizeof *bo * (size_t)big), *bi = malloc(sizeof *bi * (size_t)big);
    for (int i = 0; i < big; i++) {
        bo[i] = rank * 1000003 + i;
        bi[i] = -1;
    }
    MPI_OK(MPI_Irecv(bi, big, MPI_INT, left, 65, MPI_COMM_WORLD, &rq));
    MPI_OK(MPI_Send(bo, big, MPI_INT, right, 65, MPI_COMM_WORLD));
    MPI_OK(MPI_Wait(&rq, &st));
    MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
    CHECK(n == big, "big count %d", n);
    for (int i = 0; i < big; i++)
        CHECK(bi[i] == left * 1000003 + i, "big[%d] = %d", i, bi[i]);
    free(bo);
    free(bi);
}

int main(int argc, char **argv) {
    MPI_OK(MPI_Init(&argc, &argv));
    check_min_ranks("p2p_nb");
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    /* A barrier between tests: a wildcard receive of one test must not
     * match a message of the next. */
    void (*tests[])(void) = {test_posted_order, test_nonblocking, test_waitany,
                             test_requests};
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        tests[i]();
        MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
    }
    check_ok("p2p_nb");
    MPI_OK(MPI_Finalize());
    return 0;
}
