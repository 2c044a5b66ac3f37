/* Reduction operations: every predefined op on the types it applies to
 * (SUM on MPI_CHAR; SUM, PROD, MIN, MAX on integers and floats; BAND,
 * BOR, BXOR, LAND, LOR, LXOR on integers; LAND, LOR, LXOR on MPI_C_BOOL;
 * MINLOC and MAXLOC on the pair types, ties to the lower index; SUM and
 * PROD on complex numbers), by Allreduce and Reduce; a non-commutative
 * user op (2x2 matrix products) in rank order through Reduce, Allreduce,
 * Scan, Exscan, Reduce_scatter_block and their non-blocking forms;
 * Op_commutative, Op_free, Reduce_local. */
#include <complex.h>
#include <stdbool.h>
#include <stdint.h>

#include "check.h"

#define N 5

static int rank, size;

static const struct { MPI_Op op; const char *name; } OPS[] = {
    {MPI_SUM, "SUM"},   {MPI_PROD, "PROD"}, {MPI_MIN, "MIN"},  {MPI_MAX, "MAX"},
    {MPI_BAND, "BAND"}, {MPI_BOR, "BOR"},   {MPI_BXOR, "BXOR"}, {MPI_LAND, "LAND"},
    {MPI_LOR, "LOR"},   {MPI_LXOR, "LXOR"},
};

/* The value rank r contributes at index i for op k (small: no overflow). */
static long long value(int k, int r, int i, int is_unsigned) {
    if (OPS[k].op == MPI_PROD)
        return (r + i) % 3 + 1;
    if (OPS[k].op == MPI_BAND || OPS[k].op == MPI_BOR || OPS[k].op == MPI_BXOR)
        return 0x5a ^ (r * 0x13) ^ (i << 2);
    if (OPS[k].op == MPI_LAND || OPS[k].op == MPI_LOR || OPS[k].op == MPI_LXOR)
        return (r + i) % 3 == 0 ? 0 : r + 1 + i % 2;
    long long v = (r * 7 + i * 3) % 11;
    return is_unsigned ? v : v - 5;
}

static long long fold(int k, long long a, long long b) {
    MPI_Op op = OPS[k].op;
    if (op == MPI_SUM) return a + b;
    if (op == MPI_PROD) return a * b;
    if (op == MPI_MIN) return a < b ? a : b;
    if (op == MPI_MAX) return a > b ? a : b;
    if (op == MPI_BAND) return a & b;
    if (op == MPI_BOR) return a | b;
    if (op == MPI_BXOR) return a ^ b;
    if (op == MPI_LAND) return (a != 0) && (b != 0);
    if (op == MPI_LOR) return (a != 0) || (b != 0);
    return (a != 0) != (b != 0);
}

/* Runs ops[k] for k < nops over type T by Allreduce and Reduce (root k
 * mod size), comparing with the fold of every rank's values. */
#define DEFINE_OPS_ON(T, fn)                                                    \
    static void fn(MPI_Datatype dt, const char *tn, int nops, int is_unsigned) { \
        for (int k = 0; k < nops; k++) {                                        \
            T in[N], out[N], red[N];                                            \
            int root = k % size;                                                \
            for (int i = 0; i < N; i++) {                                       \
                in[i] = (T)value(k, rank, i, is_unsigned);                      \
                out[i] = red[i] = (T)77;                                        \
            }                                                                   \
            MPI_OK(MPI_Allreduce(in, out, N, dt, OPS[k].op, MPI_COMM_WORLD));   \
            MPI_OK(MPI_Reduce(in, red, N, dt, OPS[k].op, root, MPI_COMM_WORLD)); \
            for (int i = 0; i < N; i++) {                                       \
                long long w = value(k, 0, i, is_unsigned);                      \
                for (int r = 1; r < size; r++)                                  \
                    w = fold(k, w, value(k, r, i, is_unsigned));                \
                CHECK(out[i] == (T)w, "Allreduce %s on %s [%d] = %g, want %lld", \
                      OPS[k].name, tn, i, (double)out[i], w);                   \
                CHECK(rank != root || red[i] == (T)w,                           \
                      "Reduce %s on %s root %d [%d] = %g, want %lld", OPS[k].name, \
                      tn, root, i, (double)red[i], w);                          \
            }                                                                   \
        }                                                                       \
    }

DEFINE_OPS_ON(char, ops_char)
DEFINE_OPS_ON(signed char, ops_schar)
DEFINE_OPS_ON(unsigned char, ops_uchar)
DEFINE_OPS_ON(short, ops_short)
DEFINE_OPS_ON(int, ops_int)
DEFINE_OPS_ON(unsigned, ops_unsigned)
DEFINE_OPS_ON(long, ops_long)
DEFINE_OPS_ON(unsigned long, ops_ulong)
DEFINE_OPS_ON(long long, ops_llong)
DEFINE_OPS_ON(int64_t, ops_int64)
DEFINE_OPS_ON(uint8_t, ops_uint8)
DEFINE_OPS_ON(float, ops_float)
DEFINE_OPS_ON(double, ops_double)

static void test_predefined(void) {
    ops_char(MPI_CHAR, "MPI_CHAR", 1, 0); /* SUM only */
    ops_schar(MPI_SIGNED_CHAR, "MPI_SIGNED_CHAR", 10, 0);
    ops_uchar(MPI_UNSIGNED_CHAR, "MPI_UNSIGNED_CHAR", 10, 1);
    ops_short(MPI_SHORT, "MPI_SHORT", 10, 0);
    ops_int(MPI_INT, "MPI_INT", 10, 0);
    ops_unsigned(MPI_UNSIGNED, "MPI_UNSIGNED", 10, 1);
    ops_long(MPI_LONG, "MPI_LONG", 10, 0);
    ops_ulong(MPI_UNSIGNED_LONG, "MPI_UNSIGNED_LONG", 10, 1);
    ops_llong(MPI_LONG_LONG, "MPI_LONG_LONG", 10, 0);
    ops_int64(MPI_INT64_T, "MPI_INT64_T", 10, 0);
    ops_uint8(MPI_UINT8_T, "MPI_UINT8_T", 10, 1);
    ops_float(MPI_FLOAT, "MPI_FLOAT", 4, 0); /* SUM PROD MIN MAX */
    ops_double(MPI_DOUBLE, "MPI_DOUBLE", 4, 0);

    /* C bool: logical ops. */
    for (int k = 7; k < 10; k++) {
        bool in[N], out[N];
        for (int i = 0; i < N; i++)
            in[i] = value(k, rank, i, 0) != 0;
        MPI_OK(MPI_Allreduce(in, out, N, MPI_C_BOOL, OPS[k].op, MPI_COMM_WORLD));
        for (int i = 0; i < N; i++) {
            long long w = value(k, 0, i, 0) != 0;
            for (int r = 1; r < size; r++)
                w = fold(k, w, value(k, r, i, 0));
            CHECK(out[i] == (w != 0), "Allreduce %s on MPI_C_BOOL [%d] = %d",
                  OPS[k].name, i, (int)out[i]);
        }
    }
}

/* MINLOC and MAXLOC: [0] ties between ranks of one parity, the index
 * falling with the rank; [1] distinct; [2] all values equal. */
#define DEFINE_LOC(T, fn)                                                     \
    static void fn(MPI_Datatype dt, const char *tn) {                         \
        struct { T v; int i; } in[3], mn[3], mx[3];                           \
        in[0].v = (T)((rank % 2) * 10); in[0].i = 100 - rank;                 \
        in[1].v = (T)(rank * 3 - 4);    in[1].i = rank;                       \
        in[2].v = (T)5;                 in[2].i = 50 + (rank * 7) % size;     \
        MPI_OK(MPI_Allreduce(in, mn, 3, dt, MPI_MINLOC, MPI_COMM_WORLD));     \
        MPI_OK(MPI_Reduce(in, mx, 3, dt, MPI_MAXLOC, size - 1, MPI_COMM_WORLD)); \
        int lastodd = (size - 1) % 2 ? size - 1 : size - 2;                   \
        int lasteven = (size - 1) % 2 ? size - 2 : size - 1;                  \
        CHECK(mn[0].v == 0 && mn[0].i == 100 - lasteven,                      \
              "MINLOC %s tie: %g/%d", tn, (double)mn[0].v, mn[0].i);          \
        CHECK(mn[1].v == (T)-4 && mn[1].i == 0, "MINLOC %s: %g/%d", tn,       \
              (double)mn[1].v, mn[1].i);                                      \
        CHECK(mn[2].v == 5 && mn[2].i == 50, "MINLOC %s all equal: %g/%d", tn, \
              (double)mn[2].v, mn[2].i);                                      \
        if (rank == size - 1) {                                               \
            CHECK(mx[0].v == 10 && mx[0].i == 100 - lastodd,                  \
                  "MAXLOC %s tie: %g/%d", tn, (double)mx[0].v, mx[0].i);      \
            CHECK(mx[1].v == (T)((size - 1) * 3 - 4) && mx[1].i == size - 1,  \
                  "MAXLOC %s: %g/%d", tn, (double)mx[1].v, mx[1].i);          \
            CHECK(mx[2].v == 5 && mx[2].i == 50, "MAXLOC %s all equal: %g/%d", \
                  tn, (double)mx[2].v, mx[2].i);                              \
        }                                                                     \
    }

DEFINE_LOC(int, loc_2int)
DEFINE_LOC(double, loc_double)
DEFINE_LOC(float, loc_float)
DEFINE_LOC(long, loc_long)
DEFINE_LOC(short, loc_short)

static void test_complex(void) {
    double complex in[2], sum[2], prod[2], ws[2] = {0, 0}, wp[2] = {1, 1};
    for (int i = 0; i < 2; i++) {
        in[i] = (rank + 1) + (i - rank) * I;
        for (int r = 0; r < size; r++) {
            double complex v = (r + 1) + (i - r) * I;
            ws[i] += v;
            wp[i] *= v;
        }
    }
    MPI_OK(MPI_Allreduce(in, sum, 2, MPI_C_DOUBLE_COMPLEX, MPI_SUM, MPI_COMM_WORLD));
    MPI_OK(MPI_Allreduce(in, prod, 2, MPI_C_DOUBLE_COMPLEX, MPI_PROD,
                         MPI_COMM_WORLD));
    for (int i = 0; i < 2; i++) {
        CHECK(sum[i] == ws[i], "complex SUM [%d] = %g%+gi, want %g%+gi", i,
              creal(sum[i]), cimag(sum[i]), creal(ws[i]), cimag(ws[i]));
        CHECK(prod[i] == wp[i], "complex PROD [%d] = %g%+gi, want %g%+gi", i,
              creal(prod[i]), cimag(prod[i]), creal(wp[i]), cimag(wp[i]));
    }
    float complex f = (float)rank + 1.0f * I, fs;
    MPI_OK(MPI_Allreduce(&f, &fs, 1, MPI_C_FLOAT_COMPLEX, MPI_SUM, MPI_COMM_WORLD));
    CHECK(crealf(fs) == size * (size - 1) / 2.0f && cimagf(fs) == (float)size,
          "float complex SUM %g%+gi", crealf(fs), cimagf(fs));
}

/* 2x2 matrices mod P, as 4 ints: inout = in * inout (in is the left
 * operand, from the lower ranks). */
#define P 10007
static int mat_calls;

static void matmul(void *invec, void *inoutvec, int *len, MPI_Datatype *dt) {
    const int *a = invec;
    int *b = inoutvec;
    (void)dt;
    mat_calls++;
    for (int k = 0; k < *len; k++, a += 4, b += 4) {
        int c[4] = {(a[0] * b[0] + a[1] * b[2]) % P, (a[0] * b[1] + a[1] * b[3]) % P,
                    (a[2] * b[0] + a[3] * b[2]) % P, (a[2] * b[1] + a[3] * b[3]) % P};
        memcpy(b, c, sizeof c);
    }
}

/* Rank r's k-th matrix: no two of them commute. */
static void mat_of(int r, int k, int m[4]) {
    m[0] = 1;
    m[1] = (r + 1 + k) % P;
    m[2] = (r + 2 + 2 * k) % P;
    m[3] = 1;
}

/* The product of the k-th matrices of ranks lo..hi, in rank order. */
static void product(int lo, int hi, int k, int out[4]) {
    int m[4];
    mat_of(lo, k, out);
    for (int r = lo + 1; r <= hi; r++) {
        mat_of(r, k, m);
        int one = 1;
        MPI_Datatype dt = MPI_INT;
        /* out = out * m: matmul(in = out, inout = m). */
        matmul(out, m, &one, &dt);
        memcpy(out, m, sizeof m);
    }
}

/* got[k] (k < nk) is the product of the k-th matrices of ranks lo..hi;
 * reports the first item that is not. */
static void check_prod(const int *got, int lo, int hi, int nk, const char *what,
                       int n) {
    for (int k = 0; k < nk; k++) {
        int w[4];
        product(lo, hi, k, w);
        if (memcmp(got + 4 * k, w, sizeof w) != 0) {
            CHECK(0, "%s of %d items: item %d of ranks %d..%d: [%d %d %d %d], want "
                  "[%d %d %d %d]",
                  what, n, k, lo, hi, got[4 * k], got[4 * k + 1], got[4 * k + 2],
                  got[4 * k + 3], w[0], w[1], w[2], w[3]);
            return;
        }
    }
}

/* Every reduction of a non-commutative op over n matrices per rank: the
 * sizes pick different algorithms. Rank order must hold in each. */
static void user_op_colls(MPI_Op op, MPI_Datatype mat, int n) {
    MPI_Request rq;
    int nb = n / size > 0 ? n / size : 1; /* per block of reduce_scatter */
    int *in = malloc(sizeof *in * 4 * (size_t)n);
    int *out = malloc(sizeof *out * 4 * (size_t)n);
    int *blocks = malloc(sizeof *blocks * 4 * (size_t)nb * (size_t)size);
    int *w = malloc(sizeof *w * 4 * (size_t)nb);
    for (int k = 0; k < n; k++)
        mat_of(rank, k, in + 4 * k);
    for (int k = 0; k < nb * size; k++)
        mat_of(rank, k, blocks + 4 * k);

    for (int root = 0; root < size; root++) {
        memset(out, 0, sizeof *out * 4 * (size_t)n);
        MPI_OK(MPI_Reduce(in, out, n, mat, op, root, MPI_COMM_WORLD));
        if (rank == root)
            check_prod(out, 0, size - 1, n, "Reduce", n);
    }
    MPI_OK(MPI_Allreduce(in, out, n, mat, op, MPI_COMM_WORLD));
    check_prod(out, 0, size - 1, n, "Allreduce", n);
    MPI_OK(MPI_Scan(in, out, n, mat, op, MPI_COMM_WORLD));
    check_prod(out, 0, rank, n, "Scan", n);
    MPI_OK(MPI_Exscan(in, out, n, mat, op, MPI_COMM_WORLD));
    if (rank > 0)
        check_prod(out, 0, rank - 1, n, "Exscan", n);
    MPI_OK(MPI_Reduce_scatter_block(blocks, out, nb, mat, op, MPI_COMM_WORLD));
    for (int k = 0; k < nb; k++)
        product(0, size - 1, rank * nb + k, w + 4 * k);
    CHECK(memcmp(out, w, sizeof *w * 4 * (size_t)nb) == 0,
          "Reduce_scatter_block of %d items: [%d %d %d %d], want [%d %d %d %d]", nb,
          out[0], out[1], out[2], out[3], w[0], w[1], w[2], w[3]);

    MPI_OK(MPI_Iallreduce(in, out, n, mat, op, MPI_COMM_WORLD, &rq));
    MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    check_prod(out, 0, size - 1, n, "Iallreduce", n);
    for (int root = 0; root < size; root++) {
        MPI_OK(MPI_Ireduce(in, out, n, mat, op, root, MPI_COMM_WORLD, &rq));
        MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
        if (rank == root)
            check_prod(out, 0, size - 1, n, "Ireduce", n);
    }
    MPI_OK(MPI_Iscan(in, out, n, mat, op, MPI_COMM_WORLD, &rq));
    MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    check_prod(out, 0, rank, n, "Iscan", n);
    MPI_OK(MPI_Iexscan(in, out, n, mat, op, MPI_COMM_WORLD, &rq));
    MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    if (rank > 0)
        check_prod(out, 0, rank - 1, n, "Iexscan", n);
    MPI_OK(MPI_Ireduce_scatter_block(blocks, out, nb, mat, op, MPI_COMM_WORLD, &rq));
    MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    CHECK(memcmp(out, w, sizeof *w * 4 * (size_t)nb) == 0,
          "Ireduce_scatter_block of %d items: [%d %d %d %d], want [%d %d %d %d]", nb,
          out[0], out[1], out[2], out[3], w[0], w[1], w[2], w[3]);
    free(w);
    free(blocks);
    free(out);
    free(in);
}

static void test_user_op(void) {
    MPI_Op op, cop;
    MPI_Datatype mat;
    int c = -1, w[4];
    MPI_OK(MPI_Type_contiguous(4, MPI_INT, &mat));
    MPI_OK(MPI_Type_commit(&mat));
    MPI_OK(MPI_Op_create(matmul, 0, &op));
    MPI_OK(MPI_Op_commutative(op, &c));
    CHECK(c == 0, "Op_commutative of a non-commutative op: %d", c);
    MPI_OK(MPI_Op_commutative(MPI_SUM, &c));
    CHECK(c == 1, "Op_commutative(MPI_SUM): %d", c);
    /* 48 bytes, 64 KiB, 4.6 MiB per rank. */
    user_op_colls(op, mat, 3);
    user_op_colls(op, mat, 4096);
    user_op_colls(op, mat, 300000);

    /* Reduce_local: inout = in op inout, the order of a non-commutative op. */
    int a[4], b[4];
    mat_of(1, 0, a);
    mat_of(2, 0, b);
    product(1, 2, 0, w);
    mat_calls = 0;
    MPI_OK(MPI_Reduce_local(a, b, 1, mat, op));
    CHECK(mat_calls == 1 && memcmp(b, w, sizeof w) == 0,
          "Reduce_local user op: [%d %d %d %d]", b[0], b[1], b[2], b[3]);
    int x[3] = {1, 2, 3}, y[3] = {10, 20, 30};
    MPI_OK(MPI_Reduce_local(x, y, 3, MPI_INT, MPI_SUM));
    CHECK(y[0] == 11 && y[1] == 22 && y[2] == 33, "Reduce_local SUM");
    MPI_OK(MPI_Reduce_local(x, y, 3, MPI_INT, MPI_MIN));
    CHECK(y[0] == 1 && y[1] == 2 && y[2] == 3, "Reduce_local MIN");
    struct { int v, i; } p = {4, 9}, q = {4, 2};
    MPI_OK(MPI_Reduce_local(&p, &q, 1, MPI_2INT, MPI_MAXLOC));
    CHECK(q.v == 4 && q.i == 2, "Reduce_local MAXLOC tie: %d/%d", q.v, q.i);
    double complex z1 = 1 + 2 * I, z2 = 3 - I;
    MPI_OK(MPI_Reduce_local(&z1, &z2, 1, MPI_C_DOUBLE_COMPLEX, MPI_PROD));
    CHECK(z2 == 5 + 5 * I, "Reduce_local complex PROD %g%+gi", creal(z2), cimag(z2));

    /* A commutative user op. */
    MPI_OK(MPI_Op_create(matmul, 1, &cop));
    MPI_OK(MPI_Op_commutative(cop, &c));
    CHECK(c == 1, "Op_commutative of a commutative op: %d", c);
    MPI_OK(MPI_Op_free(&cop));
    CHECK(cop == MPI_OP_NULL, "Op_free left the handle");
    MPI_OK(MPI_Op_free(&op));
    CHECK(op == MPI_OP_NULL, "Op_free left the handle");
    MPI_OK(MPI_Type_free(&mat));
}

int main(int argc, char **argv) {
    MPI_OK(MPI_Init(&argc, &argv));
    check_min_ranks("ops");
    MPI_OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    test_predefined();
    loc_2int(MPI_2INT, "MPI_2INT");
    loc_double(MPI_DOUBLE_INT, "MPI_DOUBLE_INT");
    loc_float(MPI_FLOAT_INT, "MPI_FLOAT_INT");
    loc_long(MPI_LONG_INT, "MPI_LONG_INT");
    loc_short(MPI_SHORT_INT, "MPI_SHORT_INT");
    test_complex();
    test_user_op();
    check_ok("ops");
    MPI_OK(MPI_Finalize());
    return 0;
}
