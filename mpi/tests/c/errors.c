/* Errors under MPI_ERRORS_RETURN: the class of the code each invalid call
 * returns (MPI_ERR_RANK, MPI_ERR_TAG, MPI_ERR_COMM, MPI_ERR_TRUNCATE,
 * MPI_ERR_ROOT, MPI_ERR_COUNT, MPI_ERR_TYPE, MPI_ERR_OP, MPI_ERR_IN_STATUS),
 * MPI_Error_string and MPI_Error_class, error handlers inherited by new
 * communicators, and on rfx, MPI_ERR_UNSUPPORTED_OPERATION from a stub. */
#include "check.h"

static int rank, size;

/* The call failed with an error of class `want`. */
#define CHECK_CLASS(call, want)                                                 \
    do {                                                                        \
        int rc_ = (call);                                                       \
        CHECK(rc_ != MPI_SUCCESS, "%s succeeded, want class %s", #call, #want); \
        CHECK(check_class(rc_) == (want), "%s: class %d (%s), want %s (%d)",    \
              #call, check_class(rc_), check_errstr(rc_), #want, (want));       \
        check_string(rc_);                                                      \
    } while (0)

/* Every code has a non-empty string, resultlen its length. */
static void check_string(int code) {
    char s[MPI_MAX_ERROR_STRING];
    int len = -1;
    memset(s, 0, sizeof s);
    MPI_OK(MPI_Error_string(code, s, &len));
    CHECK(len > 0 && s[0] != '\0', "empty error string for %d", code);
    CHECK(len == (int)strlen(s), "error string length %d for '%s'", len, s);
}

static void test_handlers(void) {
    MPI_Errhandler eh;
    MPI_OK(MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh));
    CHECK(eh == MPI_ERRORS_ARE_FATAL, "the world's initial handler is not fatal");
    MPI_OK(MPI_Errhandler_free(&eh));
    MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_OK(MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh));
    CHECK(eh == MPI_ERRORS_RETURN, "set_errhandler did not take");
    MPI_OK(MPI_Errhandler_free(&eh));
    CHECK(eh == MPI_ERRHANDLER_NULL, "Errhandler_free left the handle");
    /* Errors of no communicator (MPI_COMM_NULL, infos...) go to
     * MPI_COMM_SELF's handler in MPI 4 and later: return there too. */
    MPI_OK(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));

    /* New communicators inherit the handler. */
    MPI_Comm d, s;
    MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &d));
    MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, rank % 2, 0, &s));
    MPI_OK(MPI_Comm_get_errhandler(d, &eh));
    CHECK(eh == MPI_ERRORS_RETURN, "a dup did not inherit MPI_ERRORS_RETURN");
    MPI_OK(MPI_Errhandler_free(&eh));
    MPI_OK(MPI_Comm_get_errhandler(s, &eh));
    CHECK(eh == MPI_ERRORS_RETURN, "a split did not inherit MPI_ERRORS_RETURN");
    MPI_OK(MPI_Errhandler_free(&eh));
    int x = 0, ss;
    MPI_OK(MPI_Comm_size(s, &ss));
    CHECK_CLASS(MPI_Send(&x, 1, MPI_INT, ss, 0, s), MPI_ERR_RANK);
    CHECK_CLASS(MPI_Send(&x, 1, MPI_INT, size, 0, d), MPI_ERR_RANK);
    MPI_OK(MPI_Comm_free(&s));
    MPI_OK(MPI_Comm_free(&d));
}

static void test_argument_errors(void) {
    int x = 1, y = 0;
    MPI_Request rq;
    MPI_Comm w = MPI_COMM_WORLD;
    CHECK_CLASS(MPI_Send(&x, 1, MPI_INT, size, 0, w), MPI_ERR_RANK);
    CHECK_CLASS(MPI_Send(&x, 1, MPI_INT, -7, 0, w), MPI_ERR_RANK);
    CHECK_CLASS(MPI_Recv(&y, 1, MPI_INT, size + 3, 0, w, MPI_STATUS_IGNORE),
                MPI_ERR_RANK);
    CHECK_CLASS(MPI_Isend(&x, 1, MPI_INT, size, 0, w, &rq), MPI_ERR_RANK);
    CHECK_CLASS(MPI_Irecv(&y, 1, MPI_INT, size, 0, w, &rq), MPI_ERR_RANK);
    CHECK_CLASS(MPI_Send(&x, 1, MPI_INT, (rank + 1) % size, -1, w), MPI_ERR_TAG);
    CHECK_CLASS(MPI_Recv(&y, 1, MPI_INT, 0, -5, w, MPI_STATUS_IGNORE), MPI_ERR_TAG);
    CHECK_CLASS(MPI_Isend(&x, 1, MPI_INT, 0, -1, w, &rq), MPI_ERR_TAG);
    CHECK_CLASS(MPI_Send(&x, 1, MPI_INT, 0, 0, MPI_COMM_NULL), MPI_ERR_COMM);
    CHECK_CLASS(MPI_Recv(&y, 1, MPI_INT, 0, 0, MPI_COMM_NULL, MPI_STATUS_IGNORE),
                MPI_ERR_COMM);
    CHECK_CLASS(MPI_Barrier(MPI_COMM_NULL), MPI_ERR_COMM);
    int n;
    CHECK_CLASS(MPI_Comm_size(MPI_COMM_NULL, &n), MPI_ERR_COMM);
    CHECK_CLASS(MPI_Send(&x, -1, MPI_INT, 0, 0, w), MPI_ERR_COUNT);
    CHECK_CLASS(MPI_Send(&x, 1, MPI_DATATYPE_NULL, 0, 0, w), MPI_ERR_TYPE);
    CHECK_CLASS(MPI_Bcast(&x, 1, MPI_INT, size, w), MPI_ERR_ROOT);
    CHECK_CLASS(MPI_Reduce(&x, &y, 1, MPI_INT, MPI_SUM, -1, w), MPI_ERR_ROOT);
    CHECK_CLASS(MPI_Allreduce(&x, &y, 1, MPI_INT, MPI_OP_NULL, w), MPI_ERR_OP);
    double d = 1, e;
    CHECK_CLASS(MPI_Allreduce(&d, &e, 1, MPI_DOUBLE, MPI_BAND, w), MPI_ERR_OP);
    CHECK_CLASS(MPI_Type_free(&(MPI_Datatype){MPI_INT}), MPI_ERR_TYPE);
    MPI_Comm world = MPI_COMM_WORLD;
    CHECK_CLASS(MPI_Comm_free(&world), MPI_ERR_COMM);
    CHECK_CLASS(MPI_Op_free(&(MPI_Op){MPI_SUM}), MPI_ERR_OP);
    CHECK_CLASS(MPI_Type_contiguous(-1, MPI_INT, &(MPI_Datatype){MPI_DATATYPE_NULL}),
                MPI_ERR_COUNT);
    /* The communicator works after all that. */
    MPI_OK(MPI_Allreduce(&x, &y, 1, MPI_INT, MPI_SUM, w));
    CHECK(y == size, "Allreduce after errors: %d", y);
}

/* A message longer than the receive buffer: MPI_ERR_TRUNCATE, and the
 * message is consumed (the next one arrives in order). */
static void test_truncate(void) {
    MPI_Status st, sts[2];
    MPI_Request rq[2];
    int big[4] = {1, 2, 3, 4}, small[2] = {0, 0}, rc;
    if (rank == 1) {
        MPI_OK(MPI_Send(big, 4, MPI_INT, 0, 11, MPI_COMM_WORLD));
        MPI_OK(MPI_Send(big, 1, MPI_INT, 0, 11, MPI_COMM_WORLD));
        MPI_OK(MPI_Send(big, 3, MPI_INT, 0, 12, MPI_COMM_WORLD));
        MPI_OK(MPI_Send(big, 3, MPI_INT, 0, 13, MPI_COMM_WORLD));
        MPI_OK(MPI_Send(big, 1, MPI_INT, 0, 14, MPI_COMM_WORLD));
        MPI_OK(MPI_Send(big, 4, MPI_INT, 0, 15, MPI_COMM_WORLD));
    } else if (rank == 0) {
        CHECK_CLASS(MPI_Recv(small, 2, MPI_INT, 1, 11, MPI_COMM_WORLD, &st),
                    MPI_ERR_TRUNCATE);
        small[0] = -1;
        MPI_OK(MPI_Recv(small, 2, MPI_INT, 1, 11, MPI_COMM_WORLD, &st));
        CHECK(small[0] == 1, "the message after a truncated one: %d", small[0]);
        /* Irecv: Wait returns the error. */
        MPI_OK(MPI_Irecv(small, 2, MPI_INT, 1, 12, MPI_COMM_WORLD, &rq[0]));
        CHECK_CLASS(MPI_Wait(&rq[0], &st), MPI_ERR_TRUNCATE);
        CHECK(rq[0] == MPI_REQUEST_NULL, "a failed Wait left the request");
        /* Waitall: MPI_ERR_IN_STATUS, the error in the failed one's status. */
        int ok = -1;
        MPI_OK(MPI_Irecv(small, 2, MPI_INT, 1, 13, MPI_COMM_WORLD, &rq[0]));
        MPI_OK(MPI_Irecv(&ok, 1, MPI_INT, 1, 14, MPI_COMM_WORLD, &rq[1]));
        rc = MPI_Waitall(2, rq, sts);
        CHECK(check_class(rc) == MPI_ERR_IN_STATUS, "Waitall: class %d (%s)",
              check_class(rc), check_errstr(rc));
        CHECK(check_class(sts[0].MPI_ERROR) == MPI_ERR_TRUNCATE,
              "Waitall: status 0 error class %d", check_class(sts[0].MPI_ERROR));
        CHECK(sts[1].MPI_ERROR == MPI_SUCCESS || sts[1].MPI_ERROR == MPI_ERR_PENDING,
              "Waitall: status 1 error %d", sts[1].MPI_ERROR);
        /* The good request completed (or is still pending: wait for it). */
        if (rq[1] != MPI_REQUEST_NULL)
            MPI_OK(MPI_Wait(&rq[1], MPI_STATUS_IGNORE));
        CHECK(ok == 1, "Waitall: the good receive got %d", ok);
        /* Sendrecv into a small buffer. */
        CHECK_CLASS(MPI_Sendrecv(big, 0, MPI_INT, MPI_PROC_NULL, 0, small, 2, MPI_INT,
                                 1, 15, MPI_COMM_WORLD, &st),
                    MPI_ERR_TRUNCATE);
    }
    MPI_OK(MPI_Barrier(MPI_COMM_WORLD));
}

static void test_strings_classes(void) {
    const int classes[] = {MPI_SUCCESS,  MPI_ERR_BUFFER, MPI_ERR_COUNT,
                           MPI_ERR_TYPE, MPI_ERR_TAG,    MPI_ERR_COMM,
                           MPI_ERR_RANK, MPI_ERR_ROOT,   MPI_ERR_OP,
                           MPI_ERR_ARG,  MPI_ERR_TRUNCATE, MPI_ERR_OTHER,
                           MPI_ERR_INTERN, MPI_ERR_IN_STATUS,
                           MPI_ERR_UNSUPPORTED_OPERATION};
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        int c = -1;
        MPI_OK(MPI_Error_class(classes[i], &c));
        CHECK(c == classes[i], "Error_class(%d) = %d", classes[i], c);
        check_string(classes[i]);
    }
    char a[MPI_MAX_ERROR_STRING], b[MPI_MAX_ERROR_STRING];
    int la, lb;
    MPI_OK(MPI_Error_string(MPI_ERR_RANK, a, &la));
    MPI_OK(MPI_Error_string(MPI_ERR_TAG, b, &lb));
    CHECK(strcmp(a, b) != 0, "MPI_ERR_RANK and MPI_ERR_TAG read the same: %s", a);
}

/* rfx only: a function it does not implement fails with
 * MPI_ERR_UNSUPPORTED_OPERATION (MPICH implements it). */
static void test_unsupported(void) {
    if (!check_is_rfx())
        return;
    CHECK_CLASS(MPI_Win_fence(0, MPI_WIN_NULL), MPI_ERR_UNSUPPORTED_OPERATION);
    MPI_Group g;
    CHECK_CLASS(MPI_Comm_group(MPI_COMM_WORLD, &g), MPI_ERR_UNSUPPORTED_OPERATION);
    int flag;
    CHECK_CLASS(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag,
                           MPI_STATUS_IGNORE),
                MPI_ERR_UNSUPPORTED_OPERATION);
    char s[MPI_MAX_ERROR_STRING];
    int len, rc = MPI_Win_fence(0, MPI_WIN_NULL);
    MPI_OK(MPI_Error_string(rc, s, &len));
    CHECK(strstr(s, "MPI_Win_fence") != NULL, "the string does not name the "
          "function: %s", s);
}

int main(int argc, char **argv) {
    MPI_OK(MPI_Init(&argc, &argv));
    check_min_ranks("errors");
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    test_handlers();
    test_argument_errors();
    test_truncate();
    test_strings_classes();
    test_unsupported();
    check_ok("errors");
    MPI_OK(MPI_Finalize());
    return 0;
}
