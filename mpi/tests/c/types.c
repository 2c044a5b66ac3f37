/* Datatypes: size, extent, true extent and name of predefined types
 * (MPI_DOUBLE_INT: size 12, extent 16), Type_size_c, Type_contiguous,
 * Type_dup, Type_commit, Type_free, Type_set_name / get_name, derived
 * types in send/recv (counts, partial items) and in an Allreduce; the
 * size of a message of a padded type; Get_address, Aint_add, Aint_diff. */
#include <complex.h>
#include <stdbool.h>
#include <stdint.h>

#include "check.h"

static int rank, size;

/* The C layout of an MPI_DOUBLE_INT item. */
struct dint {
    double v;
    int i;
};

struct predef {
    MPI_Datatype t;
    const char *name; /* NULL: not checked */
    int size;
    MPI_Aint extent, true_extent;
};

static void test_predefined(void) {
    const struct predef types[] = {
        {MPI_CHAR, "MPI_CHAR", 1, 1, 1},
        {MPI_SIGNED_CHAR, "MPI_SIGNED_CHAR", 1, 1, 1},
        {MPI_UNSIGNED_CHAR, "MPI_UNSIGNED_CHAR", 1, 1, 1},
        {MPI_BYTE, "MPI_BYTE", 1, 1, 1},
        {MPI_SHORT, "MPI_SHORT", (int)sizeof(short), sizeof(short), sizeof(short)},
        {MPI_INT, "MPI_INT", (int)sizeof(int), sizeof(int), sizeof(int)},
        {MPI_UNSIGNED, "MPI_UNSIGNED", (int)sizeof(unsigned), sizeof(unsigned),
         sizeof(unsigned)},
        {MPI_LONG, "MPI_LONG", (int)sizeof(long), sizeof(long), sizeof(long)},
        {MPI_UNSIGNED_LONG, "MPI_UNSIGNED_LONG", (int)sizeof(unsigned long),
         sizeof(unsigned long), sizeof(unsigned long)},
        {MPI_LONG_LONG, NULL, (int)sizeof(long long), sizeof(long long),
         sizeof(long long)},
        {MPI_FLOAT, "MPI_FLOAT", (int)sizeof(float), sizeof(float), sizeof(float)},
        {MPI_DOUBLE, "MPI_DOUBLE", (int)sizeof(double), sizeof(double),
         sizeof(double)},
        {MPI_C_BOOL, "MPI_C_BOOL", (int)sizeof(bool), sizeof(bool), sizeof(bool)},
        {MPI_INT8_T, "MPI_INT8_T", 1, 1, 1},
        {MPI_UINT16_T, "MPI_UINT16_T", 2, 2, 2},
        {MPI_INT32_T, "MPI_INT32_T", 4, 4, 4},
        {MPI_UINT64_T, "MPI_UINT64_T", 8, 8, 8},
        {MPI_C_DOUBLE_COMPLEX, "MPI_C_DOUBLE_COMPLEX", (int)sizeof(double complex),
         sizeof(double complex), sizeof(double complex)},
        /* Named MPI_C_COMPLEX by MPICH (the same handle): not checked. */
        {MPI_C_FLOAT_COMPLEX, NULL, (int)sizeof(float complex),
         sizeof(float complex), sizeof(float complex)},
        {MPI_AINT, "MPI_AINT", (int)sizeof(MPI_Aint), sizeof(MPI_Aint),
         sizeof(MPI_Aint)},
        /* Pairs: the size leaves out the struct's padding. */
        {MPI_2INT, "MPI_2INT", 8, 8, 8},
        {MPI_FLOAT_INT, "MPI_FLOAT_INT", 8, 8, 8},
        {MPI_DOUBLE_INT, "MPI_DOUBLE_INT", 12, 16, 12},
        {MPI_LONG_INT, "MPI_LONG_INT", 12, 16, 12},
        {MPI_SHORT_INT, "MPI_SHORT_INT", 6, 8, 8},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const struct predef *p = &types[i];
        char what[MPI_MAX_OBJECT_NAME + 8];
        int sz = -1, len = -1;
        MPI_Count szc = -1;
        MPI_Aint lb = -1, ext = -1, tlb = -1, text = -1;
        char name[MPI_MAX_OBJECT_NAME];
        snprintf(what, sizeof what, "type %zu", i);
        if (p->name)
            snprintf(what, sizeof what, "%s", p->name);
        MPI_OK(MPI_Type_size(p->t, &sz));
        CHECK(sz == p->size, "%s: size %d, want %d", what, sz, p->size);
        MPI_OK(MPI_Type_size_c(p->t, &szc));
        CHECK(szc == p->size, "%s: size_c %lld", what, (long long)szc);
        MPI_OK(MPI_Type_get_extent(p->t, &lb, &ext));
        CHECK(lb == 0 && ext == p->extent, "%s: lb %ld extent %ld, want 0 %ld", what,
              (long)lb, (long)ext, (long)p->extent);
        MPI_OK(MPI_Type_get_true_extent(p->t, &tlb, &text));
        CHECK(tlb == 0 && text == p->true_extent,
              "%s: true lb %ld true extent %ld, want 0 %ld", what, (long)tlb,
              (long)text, (long)p->true_extent);
        MPI_OK(MPI_Type_get_name(p->t, name, &len));
        CHECK(len == (int)strlen(name), "%s: name length %d of '%s'", what, len, name);
        if (p->name)
            CHECK(strcmp(name, p->name) == 0, "name '%s', want '%s'", name, p->name);
        else
            CHECK(len > 0, "%s: no name", what);
    }
}

static MPI_Datatype t3_seen;
static int t3_calls, t3_bad;

/* A sum over items of 3 ints, as a user op (the standard's way to reduce
 * a derived type); notes the datatype it is called with. */
static void sum3(void *in, void *inout, int *len, MPI_Datatype *dt) {
    const int *a = in;
    int *b = inout;
    t3_calls++;
    if (*dt != t3_seen)
        t3_bad++;
    for (int i = 0; i < 3 * *len; i++)
        b[i] += a[i];
}

static void test_derived(void) {
    MPI_Datatype t3, t3d, di2;
    int sz, len;
    MPI_Aint lb, ext;
    char name[MPI_MAX_OBJECT_NAME];
    MPI_OK(MPI_Type_contiguous(3, MPI_INT, &t3));
    MPI_OK(MPI_Type_commit(&t3));
    MPI_OK(MPI_Type_size(t3, &sz));
    MPI_OK(MPI_Type_get_extent(t3, &lb, &ext));
    CHECK(sz == 12 && lb == 0 && ext == 12, "3 ints: size %d extent %ld", sz,
          (long)ext);
    MPI_OK(MPI_Type_get_name(t3, name, &len));
    CHECK(len == 0 && name[0] == '\0', "a new type is named '%s'", name);
    MPI_OK(MPI_Type_set_name(t3, "three ints"));
    MPI_OK(MPI_Type_get_name(t3, name, &len));
    CHECK(strcmp(name, "three ints") == 0 && len == 10, "set name: '%s' %d", name,
          len);
    MPI_OK(MPI_Type_get_name(MPI_INT, name, &len));
    CHECK(strcmp(name, "MPI_INT") == 0, "naming a type renamed MPI_INT: %s", name);

    MPI_OK(MPI_Type_dup(t3, &t3d));
    MPI_OK(MPI_Type_size(t3d, &sz));
    MPI_OK(MPI_Type_get_extent(t3d, &lb, &ext));
    CHECK(sz == 12 && ext == 12, "dup of 3 ints: size %d extent %ld", sz, (long)ext);

    MPI_OK(MPI_Type_contiguous(2, MPI_DOUBLE_INT, &di2));
    MPI_OK(MPI_Type_commit(&di2));
    MPI_OK(MPI_Type_size(di2, &sz));
    MPI_OK(MPI_Type_get_extent(di2, &lb, &ext));
    CHECK(sz == 24 && lb == 0 && ext == 32, "2 DOUBLE_INT: size %d extent %ld", sz,
          (long)ext);
    MPI_OK(MPI_Type_get_true_extent(di2, &lb, &ext));
    CHECK(lb == 0 && ext == 28, "2 DOUBLE_INT: true extent %ld, want 28", (long)ext);

    /* A contiguous type of a contiguous type. */
    MPI_Datatype t6;
    MPI_OK(MPI_Type_contiguous(2, t3, &t6));
    MPI_OK(MPI_Type_commit(&t6));
    MPI_OK(MPI_Type_size(t6, &sz));
    CHECK(sz == 24, "2 x 3 ints: size %d", sz);

    /* Send/recv in the derived type: counts in items of it. */
    MPI_Status st;
    int n;
    if (rank == 0) {
        int v[9];
        for (int i = 0; i < 9; i++)
            v[i] = 10 + i;
        MPI_OK(MPI_Send(v, 2, t3, 1, 1, MPI_COMM_WORLD));  /* 6 ints */
        MPI_OK(MPI_Send(v, 7, MPI_INT, 1, 2, MPI_COMM_WORLD)); /* 2 1/3 items */
        MPI_OK(MPI_Send(v, 1, t6, 1, 3, MPI_COMM_WORLD));
    } else if (rank == 1) {
        int v[12];
        for (int i = 0; i < 12; i++)
            v[i] = -1;
        MPI_OK(MPI_Recv(v, 4, t3, 0, 1, MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Get_count(&st, t3, &n));
        CHECK(n == 2, "6 ints as 3-int items: %d", n);
        MPI_OK(MPI_Get_count(&st, t3d, &n));
        CHECK(n == 2, "6 ints as a dup's items: %d", n);
        for (int i = 0; i < 12; i++)
            CHECK(v[i] == (i < 6 ? 10 + i : -1), "derived recv [%d] = %d", i, v[i]);
        MPI_OK(MPI_Recv(v, 3, t3, 0, 2, MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Get_count(&st, t3, &n));
        CHECK(n == MPI_UNDEFINED, "7 ints as 3-int items: %d, want MPI_UNDEFINED", n);
        for (int i = 0; i < 7; i++)
            CHECK(v[i] == 10 + i, "partial recv [%d] = %d", i, v[i]);
        MPI_OK(MPI_Recv(v, 12, MPI_INT, 0, 3, MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
        CHECK(n == 6, "a 6-int item as ints: %d", n);
    }

    /* In an Allreduce, with a user op (predefined ops apply to predefined
     * types only: MPICH refuses MPI_SUM on a contiguous type). */
    int in[6], out[6];
    MPI_Op op;
    for (int i = 0; i < 6; i++)
        in[i] = rank * 10 + i;
    t3_seen = t3;
    MPI_OK(MPI_Op_create(sum3, 1, &op));
    MPI_OK(MPI_Allreduce(in, out, 2, t3, op, MPI_COMM_WORLD));
    for (int i = 0; i < 6; i++)
        CHECK(out[i] == 10 * size * (size - 1) / 2 + size * i,
              "Allreduce of 3-int items [%d] = %d", i, out[i]);
    int calls = 0;
    MPI_OK(MPI_Allreduce(&t3_calls, &calls, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(calls > 0, "the user op was never called");
    CHECK(t3_bad == 0, "the user op saw another datatype %d times", t3_bad);
    MPI_OK(MPI_Allreduce(MPI_IN_PLACE, in, 2, t3, op, MPI_COMM_WORLD));
    for (int i = 0; i < 6; i++)
        CHECK(in[i] == out[i], "Allreduce in place of 3-int items [%d] = %d", i,
              in[i]);
    MPI_OK(MPI_Op_free(&op));

    /* rfx also applies predefined ops to contiguous types of a predefined
     * type (an extension, as for MPI_Accumulate): checked on rfx only. */
    if (check_is_rfx()) {
        for (int i = 0; i < 6; i++)
            in[i] = rank * 10 + i;
        MPI_OK(MPI_Allreduce(MPI_IN_PLACE, in, 2, t3d, MPI_MAX, MPI_COMM_WORLD));
        for (int i = 0; i < 6; i++)
            CHECK(in[i] == (size - 1) * 10 + i, "rfx: MAX of 3-int items [%d] = %d",
                  i, in[i]);
        struct dint p[2] = {{(double)(rank % 2), rank}, {-rank, rank}}, q[2];
        MPI_OK(MPI_Allreduce(p, q, 1, di2, MPI_MINLOC, MPI_COMM_WORLD));
        CHECK(q[0].v == 0 && q[0].i == 0, "rfx: MINLOC of DOUBLE_INT items [0] = %g/%d",
              q[0].v, q[0].i);
        CHECK(q[1].v == -(size - 1) && q[1].i == size - 1,
              "rfx: MINLOC of DOUBLE_INT items [1] = %g/%d", q[1].v, q[1].i);
    }

    MPI_Datatype frees[] = {t6, di2, t3d, t3};
    for (size_t i = 0; i < sizeof frees / sizeof frees[0]; i++) {
        MPI_OK(MPI_Type_free(&frees[i]));
        CHECK(frees[i] == MPI_DATATYPE_NULL, "Type_free left handle %zu", i);
    }
}

/* A message of MPI_DOUBLE_INT carries the pairs, not the padding after
 * them (12 bytes of data in each 16-byte item): the padding of the
 * receive buffer is not written (only the type map's locations are). */
static void test_padded_message(void) {
    struct dint p[3], q[3];
    MPI_Status st;
    int n;
    memset(p, 0xcd, sizeof p);
    for (int k = 0; k < 3; k++) {
        p[k].v = k + 1.5;
        p[k].i = k + 1;
    }
    if (rank == 0) {
        MPI_OK(MPI_Send(p, 3, MPI_DOUBLE_INT, 1, 7, MPI_COMM_WORLD));
    } else if (rank == 1) {
        memset(q, 0xab, sizeof q);
        MPI_OK(MPI_Recv(q, 3, MPI_DOUBLE_INT, 0, 7, MPI_COMM_WORLD, &st));
        MPI_OK(MPI_Get_count(&st, MPI_DOUBLE_INT, &n));
        CHECK(n == 3, "3 DOUBLE_INT: count %d", n);
        for (int k = 0; k < 3; k++) {
            const unsigned char *pad = (const unsigned char *)&q[k] + 12;
            CHECK(q[k].v == p[k].v && q[k].i == p[k].i, "DOUBLE_INT [%d] = %g/%d", k,
                  q[k].v, q[k].i);
            CHECK(pad[0] == 0xab && pad[1] == 0xab && pad[2] == 0xab &&
                      pad[3] == 0xab,
                  "DOUBLE_INT [%d]: padding bytes 12..15 written (0x%02x..), not "
                  "in the type map",
                  k, pad[0]);
        }
    }
}

static void test_addresses(void) {
    double a[10];
    MPI_Aint p0, p7;
    MPI_OK(MPI_Get_address(&a[0], &p0));
    MPI_OK(MPI_Get_address(&a[7], &p7));
    CHECK(MPI_Aint_diff(p7, p0) == 7 * (MPI_Aint)sizeof(double), "Aint_diff %ld",
          (long)MPI_Aint_diff(p7, p0));
    CHECK(MPI_Aint_add(p0, 7 * (MPI_Aint)sizeof(double)) == p7, "Aint_add");
    CHECK(MPI_Aint_diff(p0, p7) == -7 * (MPI_Aint)sizeof(double), "negative diff");
}

int main(int argc, char **argv) {
    MPI_OK(MPI_Init(&argc, &argv));
    check_min_ranks("types");
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    test_predefined();
    test_derived();
    test_padded_message();
    test_addresses();
    check_ok("types");
    MPI_OK(MPI_Finalize());
    return 0;
}
