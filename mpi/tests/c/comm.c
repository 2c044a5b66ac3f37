/* Communicators: rank and size of MPI_COMM_WORLD and MPI_COMM_SELF,
 * Comm_split (colors, MPI_UNDEFINED, order by key then old rank),
 * Comm_dup (its messages never match the original's), Comm_compare,
 * Comm_free, names, Comm_test_inter, the predefined attributes, and the
 * integer conversions of handles. */
#include <limits.h>

#include "check.h"

static int rank, size;

/* Checks the order of a split: my rank in `c` is my place among the old
 * ranks of color `color(r)` sorted by (key(r), r); every rank's old rank
 * as allgathered on `c` follows that order. */
static void check_split(MPI_Comm c, int (*color)(int), int (*key)(int),
                        const char *what) {
    int n = 0, me = -1, nr = -1, ns = -1;
    int *order = malloc(sizeof *order * (size_t)size);
    /* The members of my color, in split order (insertion sort). */
    for (int r = 0; r < size; r++) {
        if (color(r) != color(rank))
            continue;
        int j = n++;
        while (j > 0 && (key(order[j - 1]) > key(r) ||
                         (key(order[j - 1]) == key(r) && order[j - 1] > r))) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = r;
    }
    for (int i = 0; i < n; i++)
        if (order[i] == rank)
            me = i;
    MPI_OK(MPI_Comm_rank(c, &nr));
    MPI_OK(MPI_Comm_size(c, &ns));
    CHECK(ns == n, "%s: size %d, want %d", what, ns, n);
    CHECK(nr == me, "%s: rank %d, want %d (color %d key %d)", what, nr, me,
          color(rank), key(rank));
    int *olds = malloc(sizeof *olds * (size_t)n);
    MPI_OK(MPI_Allgather(&rank, 1, MPI_INT, olds, 1, MPI_INT, c));
    for (int i = 0; i < n; i++)
        CHECK(olds[i] == order[i], "%s: new rank %d is old rank %d, want %d", what,
              i, olds[i], order[i]);
    /* A collective and a message on the new communicator. */
    int sum = 0, want = 0;
    for (int i = 0; i < n; i++)
        want += order[i];
    MPI_OK(MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, c));
    CHECK(sum == want, "%s: Allreduce %d, want %d", what, sum, want);
    int right = (nr + 1) % n, left = (nr + n - 1) % n, got = -1;
    MPI_Status st;
    MPI_OK(MPI_Sendrecv(&rank, 1, MPI_INT, right, 5, &got, 1, MPI_INT, left, 5, c,
                        &st));
    CHECK(got == order[left] && st.MPI_SOURCE == left,
          "%s: from new rank %d got old rank %d, status source %d", what, left, got,
          st.MPI_SOURCE);
    free(olds);
    free(order);
}

static int parity(int r) { return r % 2; }
static int zero(int r) { (void)r; return 0; }
static int minus(int r) { return -r; }
static int halves(int r) { return (size - r) / 2; } /* ties, reversed */
static int thirds(int r) { return r % 3; }
static int mod3_rev(int r) { return 7 - (r * 5) % 3; }
static int extreme(int r) { return r % 2 ? INT_MAX - r : INT_MIN + r; }

static void test_split(void) {
    int (*colors[])(int) = {zero, parity, zero, parity, thirds, zero, zero};
    int (*keys[])(int) = {zero, zero, minus, halves, mod3_rev, halves, extreme};
    for (size_t i = 0; i < sizeof colors / sizeof colors[0]; i++) {
        MPI_Comm c;
        char what[64];
        snprintf(what, sizeof what, "split %zu", i);
        MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, colors[i](rank), keys[i](rank), &c));
        CHECK(c != MPI_COMM_NULL, "%s gave MPI_COMM_NULL", what);
        check_split(c, colors[i], keys[i], what);
        MPI_OK(MPI_Comm_free(&c));
        CHECK(c == MPI_COMM_NULL, "Comm_free left the handle");
    }
    /* MPI_UNDEFINED: rank 0 is left out. */
    MPI_Comm c;
    MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? MPI_UNDEFINED : 1, rank, &c));
    if (rank == 0) {
        CHECK(c == MPI_COMM_NULL, "MPI_UNDEFINED gave a communicator");
    } else {
        int nr, ns;
        CHECK(c != MPI_COMM_NULL, "split of the others gave MPI_COMM_NULL");
        MPI_OK(MPI_Comm_rank(c, &nr));
        MPI_OK(MPI_Comm_size(c, &ns));
        CHECK(nr == rank - 1 && ns == size - 1, "rank %d of %d", nr, ns);
        /* A split of a split. */
        MPI_Comm cc;
        MPI_OK(MPI_Comm_split(c, 0, -nr, &cc));
        int r2;
        MPI_OK(MPI_Comm_rank(cc, &r2));
        CHECK(r2 == ns - 1 - nr, "split of a split: rank %d", r2);
        int b = r2 == 0 ? 31 : -1;
        MPI_OK(MPI_Bcast(&b, 1, MPI_INT, 0, cc));
        CHECK(b == 31, "Bcast on a split of a split: %d", b);
        MPI_OK(MPI_Comm_free(&cc));
        MPI_OK(MPI_Comm_free(&c));
    }
}

static void test_dup(void) {
    MPI_Comm d;
    MPI_Status st;
    MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &d));
    int nr, ns;
    MPI_OK(MPI_Comm_rank(d, &nr));
    MPI_OK(MPI_Comm_size(d, &ns));
    CHECK(nr == rank && ns == size, "dup: rank %d of %d", nr, ns);
    /* Rank 1 sends on the world, then on the dup, same tag; rank 0 receives
     * on the dup first: only the dup's message matches. */
    if (rank == 1) {
        MPI_Request rq[2];
        int a = 111, b = 222;
        MPI_OK(MPI_Isend(&a, 1, MPI_INT, 0, 9, MPI_COMM_WORLD, &rq[0]));
        MPI_OK(MPI_Isend(&b, 1, MPI_INT, 0, 9, d, &rq[1]));
        MPI_OK(MPI_Waitall(2, rq, MPI_STATUSES_IGNORE));
    } else if (rank == 0) {
        int v = -1;
        MPI_OK(MPI_Recv(&v, 1, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, d, &st));
        CHECK(v == 222, "the dup received %d (the world's message?)", v);
        CHECK(st.MPI_SOURCE == 1 && st.MPI_TAG == 9, "dup status %d/%d",
              st.MPI_SOURCE, st.MPI_TAG);
        MPI_OK(MPI_Recv(&v, 1, MPI_INT, 1, 9, MPI_COMM_WORLD, &st));
        CHECK(v == 111, "the world received %d", v);
    }
    /* Collectives on the dup and the world interleaved. */
    int x = rank, s1 = 0, s2 = 0;
    MPI_OK(MPI_Allreduce(&x, &s1, 1, MPI_INT, MPI_SUM, d));
    MPI_OK(MPI_Allreduce(&x, &s2, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    CHECK(s1 == size * (size - 1) / 2 && s2 == size - 1, "dup collectives %d %d",
          s1, s2);

    /* Compare. */
    int res;
    MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, MPI_COMM_WORLD, &res));
    CHECK(res == MPI_IDENT, "compare(world, world) = %d", res);
    MPI_OK(MPI_Comm_compare(d, d, &res));
    CHECK(res == MPI_IDENT, "compare(dup, dup) = %d", res);
    MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, d, &res));
    CHECK(res == MPI_CONGRUENT, "compare(world, dup) = %d", res);
    MPI_OK(MPI_Comm_compare(MPI_COMM_SELF, MPI_COMM_SELF, &res));
    CHECK(res == MPI_IDENT, "compare(self, self) = %d", res);
    MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, MPI_COMM_SELF, &res));
    CHECK(res == MPI_UNEQUAL, "compare(world, self) = %d", res);
    MPI_Comm same, rev, half;
    MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, 0, 0, &same));
    MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, 0, -rank, &rev));
    MPI_OK(MPI_Comm_split(MPI_COMM_WORLD, rank % 2, 0, &half));
    MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, same, &res));
    CHECK(res == MPI_CONGRUENT, "compare(world, split same order) = %d", res);
    MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, rev, &res));
    CHECK(res == MPI_SIMILAR, "compare(world, split reversed) = %d", res);
    MPI_OK(MPI_Comm_compare(rev, MPI_COMM_WORLD, &res));
    CHECK(res == MPI_SIMILAR, "compare(split reversed, world) = %d", res);
    MPI_OK(MPI_Comm_compare(MPI_COMM_WORLD, half, &res));
    CHECK(res == MPI_UNEQUAL, "compare(world, split by parity) = %d", res);
    MPI_OK(MPI_Comm_compare(d, same, &res));
    CHECK(res == MPI_CONGRUENT, "compare(dup, split same order) = %d", res);

    /* A dup of a split keeps its ranks. */
    MPI_Comm hd;
    MPI_OK(MPI_Comm_dup(half, &hd));
    int hr, hdr;
    MPI_OK(MPI_Comm_rank(half, &hr));
    MPI_OK(MPI_Comm_rank(hd, &hdr));
    CHECK(hr == hdr, "dup of a split: rank %d, was %d", hdr, hr);
    MPI_OK(MPI_Comm_compare(half, hd, &res));
    CHECK(res == MPI_CONGRUENT, "compare(split, its dup) = %d", res);
    MPI_Comm comms[] = {hd, half, rev, same, d};
    for (size_t i = 0; i < sizeof comms / sizeof comms[0]; i++) {
        MPI_OK(MPI_Comm_free(&comms[i]));
        CHECK(comms[i] == MPI_COMM_NULL, "Comm_free left handle %zu", i);
    }
    /* Many dups, each used and freed. */
    for (int i = 0; i < 40; i++) {
        MPI_Comm t;
        int v = i, w = 0;
        MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &t));
        MPI_OK(MPI_Allreduce(&v, &w, 1, MPI_INT, MPI_SUM, t));
        CHECK(w == i * size, "dup %d: %d", i, w);
        MPI_OK(MPI_Comm_free(&t));
    }
}

static void test_self(void) {
    int r, n, x = rank * 3 + 1, y = -1;
    MPI_Status st;
    MPI_OK(MPI_Comm_rank(MPI_COMM_SELF, &r));
    MPI_OK(MPI_Comm_size(MPI_COMM_SELF, &n));
    CHECK(r == 0 && n == 1, "MPI_COMM_SELF: rank %d of %d", r, n);
    MPI_OK(MPI_Sendrecv(&x, 1, MPI_INT, 0, 2, &y, 1, MPI_INT, 0, 2, MPI_COMM_SELF,
                        &st));
    CHECK(y == x && st.MPI_SOURCE == 0 && st.MPI_TAG == 2, "self Sendrecv %d", y);
    y = -1;
    MPI_OK(MPI_Allreduce(&x, &y, 1, MPI_INT, MPI_SUM, MPI_COMM_SELF));
    CHECK(y == x, "self Allreduce %d", y);
    MPI_OK(MPI_Bcast(&x, 1, MPI_INT, 0, MPI_COMM_SELF));
    MPI_OK(MPI_Barrier(MPI_COMM_SELF));
    int g[1] = {-1};
    MPI_OK(MPI_Allgather(&x, 1, MPI_INT, g, 1, MPI_INT, MPI_COMM_SELF));
    CHECK(g[0] == x, "self Allgather %d", g[0]);
    MPI_Comm sd;
    MPI_OK(MPI_Comm_dup(MPI_COMM_SELF, &sd));
    int res;
    MPI_OK(MPI_Comm_compare(MPI_COMM_SELF, sd, &res));
    CHECK(res == MPI_CONGRUENT, "compare(self, dup of self) = %d", res);
    MPI_OK(MPI_Comm_free(&sd));
}

static void test_names_attrs(void) {
    char name[MPI_MAX_OBJECT_NAME];
    int len = -1, flag = 0, *v = NULL;
    MPI_OK(MPI_Comm_get_name(MPI_COMM_WORLD, name, &len));
    CHECK(strcmp(name, "MPI_COMM_WORLD") == 0 && len == 14, "world name '%s' %d",
          name, len);
    MPI_OK(MPI_Comm_get_name(MPI_COMM_SELF, name, &len));
    CHECK(strcmp(name, "MPI_COMM_SELF") == 0 && len == 13, "self name '%s' %d",
          name, len);
    MPI_Comm d;
    MPI_OK(MPI_Comm_dup(MPI_COMM_WORLD, &d));
    MPI_OK(MPI_Comm_get_name(d, name, &len));
    CHECK(name[0] == '\0' && len == 0, "a new communicator is named '%s'", name);
    MPI_OK(MPI_Comm_set_name(d, "my dup"));
    MPI_OK(MPI_Comm_get_name(d, name, &len));
    CHECK(strcmp(name, "my dup") == 0 && len == 6, "dup name '%s' %d", name, len);
    MPI_OK(MPI_Comm_set_name(d, "renamed"));
    MPI_OK(MPI_Comm_get_name(d, name, &len));
    CHECK(strcmp(name, "renamed") == 0 && len == 7, "renamed '%s' %d", name, len);
    MPI_OK(MPI_Comm_get_name(MPI_COMM_WORLD, name, &len));
    CHECK(strcmp(name, "MPI_COMM_WORLD") == 0, "naming a dup renamed the world");
    MPI_OK(MPI_Comm_set_name(MPI_COMM_WORLD, "the world"));
    MPI_OK(MPI_Comm_get_name(MPI_COMM_WORLD, name, &len));
    CHECK(strcmp(name, "the world") == 0 && len == 9, "world renamed '%s'", name);
    MPI_OK(MPI_Comm_set_name(MPI_COMM_WORLD, "MPI_COMM_WORLD"));

    MPI_OK(MPI_Comm_test_inter(MPI_COMM_WORLD, &flag));
    CHECK(flag == 0, "the world is an intercommunicator");
    MPI_OK(MPI_Comm_test_inter(d, &flag));
    CHECK(flag == 0, "a dup is an intercommunicator");

    MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &v, &flag));
    CHECK(flag && v != NULL && *v >= 32767, "MPI_TAG_UB: flag %d value %d", flag,
          flag && v ? *v : 0);
    int ub = *v;
    MPI_OK(MPI_Comm_get_attr(d, MPI_TAG_UB, &v, &flag));
    CHECK(flag && *v == ub, "MPI_TAG_UB on a dup: flag %d", flag);
    MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_WTIME_IS_GLOBAL, &v, &flag));
    CHECK(!flag || *v == 0 || *v == 1, "MPI_WTIME_IS_GLOBAL = %d", *v);
    MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_HOST, &v, &flag));
    CHECK(flag && (*v == MPI_PROC_NULL || (*v >= 0 && *v < size)), "MPI_HOST %d %d",
          flag, flag ? *v : 0);
    MPI_OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_IO, &v, &flag));
    CHECK(flag && (*v == MPI_PROC_NULL || *v == MPI_ANY_SOURCE ||
                   (*v >= 0 && *v < size)),
          "MPI_IO %d %d", flag, flag ? *v : 0);
    /* The largest tag works. */
    if (size >= 2 && rank < 2) {
        int x = 5, y = -1;
        MPI_Status st;
        MPI_OK(MPI_Sendrecv(&x, 1, MPI_INT, 1 - rank, ub, &y, 1, MPI_INT, 1 - rank,
                            ub, d, &st));
        CHECK(y == 5 && st.MPI_TAG == ub, "tag MPI_TAG_UB: %d, tag %d", y,
              st.MPI_TAG);
    }

    /* Handles as integers and back. */
    CHECK(MPI_Comm_fromint(MPI_Comm_toint(MPI_COMM_WORLD)) == MPI_COMM_WORLD,
          "Comm toint/fromint of the world");
    CHECK(MPI_Comm_fromint(MPI_Comm_toint(d)) == d, "Comm toint/fromint of a dup");
    CHECK(MPI_Comm_fromint(MPI_Comm_toint(MPI_COMM_NULL)) == MPI_COMM_NULL,
          "Comm toint/fromint of MPI_COMM_NULL");
    CHECK(MPI_Type_fromint(MPI_Type_toint(MPI_DOUBLE)) == MPI_DOUBLE,
          "Type toint/fromint");
    CHECK(MPI_Op_fromint(MPI_Op_toint(MPI_MAXLOC)) == MPI_MAXLOC, "Op toint/fromint");
    CHECK(MPI_Request_fromint(MPI_Request_toint(MPI_REQUEST_NULL)) ==
              MPI_REQUEST_NULL,
          "Request toint/fromint");
    CHECK(MPI_Info_fromint(MPI_Info_toint(MPI_INFO_NULL)) == MPI_INFO_NULL,
          "Info toint/fromint");
    CHECK(MPI_Errhandler_fromint(MPI_Errhandler_toint(MPI_ERRORS_RETURN)) ==
              MPI_ERRORS_RETURN,
          "Errhandler toint/fromint");
    MPI_Comm e = MPI_Comm_fromint(MPI_Comm_toint(d));
    int x = rank, s = 0;
    MPI_OK(MPI_Allreduce(&x, &s, 1, MPI_INT, MPI_SUM, e));
    CHECK(s == size * (size - 1) / 2, "Allreduce on a handle from an int: %d", s);
    MPI_OK(MPI_Comm_free(&d));
}

int main(int argc, char **argv) {
    MPI_OK(MPI_Init(&argc, &argv));
    check_min_ranks("comm");
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    test_split();
    test_dup();
    test_self();
    test_names_attrs();
    check_ok("comm");
    MPI_OK(MPI_Finalize());
    return 0;
}
