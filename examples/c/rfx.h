/* rfx function ABI for C authors. See the crate docs of rfx-executors (executors/src/lib.rs).
 *
 * rFaaS ABI (no marker):
 *     uint32_t name(void *in, uint32_t size, void *out);
 * Extended ABI (marked with RFX_EXTENDED(name)):
 *     uint32_t name(const rfx_context *ctx, const void *in, uint32_t size, void *out);
 *
 * Both return the output length, at most the output capacity, or a status code:
 * RFX_FAILED to report an error. Functions must not write to `in`.
 */
#ifndef RFX_H
#define RFX_H

#include <stdint.h>

#define RFX_ABI_VERSION 1u

/* Status codes: the top 256 values of uint32_t are reserved. */
#define RFX_PANICKED 0xffffffffu /* a Rust function panicked */
#define RFX_FAILED 0xfffffffeu   /* the function refused its input */

typedef struct rfx_context {
    uint32_t abi_version;   /* RFX_ABI_VERSION of the executor (or later) */
    uint32_t rank;          /* this instance in a group invocation; 0 otherwise */
    uint32_t size;          /* instances in the group; 1 otherwise */
    uint32_t out_capacity;  /* bytes the function may write to out */
    uint64_t invocation_id;
    void *comm;             /* reserved for the communicator; NULL for now */
} rfx_context;

/* Marks `name` as an extended-ABI function: exports `const uint32_t rfx_abi_name = 1`. */
#define RFX_EXTENDED(name) \
    __attribute__((visibility("default"))) const uint32_t rfx_abi_##name = RFX_ABI_VERSION

#endif /* RFX_H */
