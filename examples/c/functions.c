/* Example rfx functions in C.
 *
 * echo_c and sum_u32 use the rFaaS ABI unchanged, so the same source builds for rFaaS;
 * rank_info_c shows the extended ABI. Built by executors/tests/abi.rs with
 *     cc -shared -fPIC -Wall -Wextra -Werror -o libfunctions_c.so functions.c
 */
#include <stdint.h>
#include <string.h>

#include "rfx.h"

/* Copies the input to the output (the caller sizes the output buffer, as in rFaaS). */
uint32_t echo_c(void *in, uint32_t size, void *out)
{
    memcpy(out, in, size);
    return size;
}

/* Sums little-endian uint32 values (wrapping); writes the sum as one uint32. */
uint32_t sum_u32(void *in, uint32_t size, void *out)
{
    const unsigned char *p = in;
    uint32_t sum = 0;
    if (size % 4 != 0)
        return RFX_FAILED;
    for (uint32_t i = 0; i < size; i += 4) {
        uint32_t v;
        memcpy(&v, p + i, 4);
        sum += v;
    }
    memcpy(out, &sum, 4);
    return 4;
}

/* Extended ABI: writes rank and size as two uint32. */
RFX_EXTENDED(rank_info_c);
uint32_t rank_info_c(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    (void)in;
    (void)size;
    if (ctx->out_capacity < 8)
        return RFX_FAILED;
    memcpy(out, &ctx->rank, 4);
    memcpy((char *)out + 4, &ctx->size, 4);
    return 8;
}

/* Returns a length far beyond any output buffer without writing: the executor must refuse it. */
uint32_t overclaim_c(void *in, uint32_t size, void *out)
{
    (void)in;
    (void)size;
    (void)out;
    return 1u << 30;
}

/* Group invocation: the sum over every instance of its input doubles, by allreduce over the
 * group's communicator; 8 bytes out. RFX_FAILED outside a group or on a communicator error. */
RFX_EXTENDED(group_sum_c);
uint32_t group_sum_c(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    const rfx_comm *comm = ctx->comm;
    if (comm == NULL || ctx->out_capacity < 8)
        return RFX_FAILED;
    double mine = 0, all = 0, x;
    for (uint32_t i = 0; i + 8 <= size; i += 8) {
        memcpy(&x, (const char *)in + i, 8);
        mine += x;
    }
    if (comm->allreduce(comm->handle, &mine, &all, 1, RFX_F64, RFX_SUM) != RFX_OK)
        return RFX_FAILED;
    memcpy(out, &all, 8);
    return 8;
}
