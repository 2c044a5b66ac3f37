/* An MPI kernel as an rfx function: in a group invocation MPI_COMM_WORLD is
 * the group, so code written for MPI runs unchanged inside a function.
 * Built against the MPI standard ABI (tests/mpi.rs):
 *     mpicc_abi -shared -fPIC -I examples/c -o libmpi_kernel.so mpi_kernel.c
 * The executor loads rfx's libmpi_abi.so.1 for it.
 */
#include <mpi.h>
#include <stdint.h>
#include <string.h>

#include "rfx.h"

/* Unchanged MPI code: the sum of every rank's values, and a ring shift. */
static double global_sum(const double *x, int n)
{
    double mine = 0, all = 0;
    for (int i = 0; i < n; i++)
        mine += x[i];
    MPI_Allreduce(&mine, &all, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return all;
}

static int left_neighbour(void)
{
    int rank, size, got = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    if (rank % 2 == 0) {
        MPI_Send(&rank, 1, MPI_INT, right, 7, MPI_COMM_WORLD);
        MPI_Recv(&got, 1, MPI_INT, left, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else {
        MPI_Recv(&got, 1, MPI_INT, left, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Send(&rank, 1, MPI_INT, right, 7, MPI_COMM_WORLD);
    }
    return got;
}

/* In: doubles. Out: the group's sum (8 bytes), the left neighbour's rank
 * and MPI's view of rank and size (3 x int32). */
RFX_EXTENDED(mpi_sum);
uint32_t mpi_sum(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    int initialized = 0, rank = -1, nranks = -1;
    MPI_Initialized(&initialized);
    if (!initialized || ctx->out_capacity < 20)
        return RFX_FAILED;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    double x[64];
    int n = (int)(size / 8);
    if (n > 64)
        n = 64;
    memcpy(x, in, (size_t)n * 8);
    double s = global_sum(x, n);
    int32_t info[3] = {left_neighbour(), rank, nranks};
    memcpy(out, &s, 8);
    memcpy((char *)out + 8, info, 12);
    return 20;
}
