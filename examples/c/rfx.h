/* rfx function ABI for C authors. See the crate docs of rfx-executors (executors/src/lib.rs).
 *
 * rFaaS ABI (no marker):
 *     uint32_t name(void *in, uint32_t size, void *out);
 * Extended ABI (marked with RFX_EXTENDED(name)):
 *     uint32_t name(const rfx_context *ctx, const void *in, uint32_t size, void *out);
 *
 * Both return the output length, at most the output capacity, or a status code:
 * RFX_FAILED to report an error. Functions must not write to `in`.
 *
 * A function that returns RFX_FAILED may first write why into `out`, NUL-terminated (at
 * most 1 KiB is read): the client's error carries that text.
 *
 * Device functions (marked with RFX_DEVICE_FUNCTION(name), ABI 2): ctx->device says where
 * the input and the output buffer are in device memory (a GPU's, through CUDA). The executor
 * copies the input there before the call; after it, it waits for ctx->device->stream and
 * copies back as many output bytes as the function returned, from ctx->device->out.
 */
#ifndef RFX_H
#define RFX_H

#include <stdint.h>

#define RFX_ABI_VERSION 2u

/* Status codes: the top 256 values of uint32_t are reserved. */
#define RFX_PANICKED 0xffffffffu /* a Rust function panicked */
#define RFX_FAILED 0xfffffffeu   /* the function refused its input */

/* The communicator of a group invocation (executors/src/comm.rs): entry points the executor
 * fills; each returns RFX_OK or an RFX_E_* code. Valid during the call only. */
#define RFX_COMM_ABI_VERSION 2u
#define RFX_ANY_SOURCE 0xffffffffu
enum { RFX_OK = 0, RFX_E_INVALID = -1, RFX_E_PEER_GONE = -2, RFX_E_TIMEOUT = -3,
       RFX_E_FAILED = -4, RFX_E_TRUNCATED = -5 };
enum { RFX_U8 = 0, RFX_I32 = 1, RFX_U32 = 2, RFX_I64 = 3, RFX_U64 = 4, RFX_F32 = 5,
       RFX_F64 = 6 };
enum { RFX_SUM = 0, RFX_PROD = 1, RFX_MIN = 2, RFX_MAX = 3, RFX_BAND = 4, RFX_BOR = 5,
       RFX_BXOR = 6 };

typedef struct rfx_comm {
    uint32_t abi_version; /* RFX_COMM_ABI_VERSION (or later: entries are appended) */
    uint32_t rank;
    uint32_t size;
    uint32_t reserved;
    void *handle; /* pass to every entry point */
    int32_t (*send)(void *h, const void *buf, uint64_t len, uint32_t dest, uint32_t tag);
    int32_t (*recv)(void *h, void *buf, uint64_t cap, uint32_t source, uint32_t tag,
                    uint64_t *len);
    int32_t (*barrier)(void *h);
    int32_t (*bcast)(void *h, void *buf, uint64_t len, uint32_t root);
    int32_t (*reduce)(void *h, const void *in, void *out, uint64_t count, uint32_t dtype,
                      uint32_t op, uint32_t root);
    int32_t (*allreduce)(void *h, const void *in, void *out, uint64_t count, uint32_t dtype,
                         uint32_t op);
    /* out holds size * len bytes: rank r's block at r * len */
    int32_t (*allgather)(void *h, const void *in, uint64_t len, void *out);
    /* Version 2. gather: the root's out holds size * len bytes (ignored elsewhere);
     * scatter: the root's in holds size * len bytes (ignored elsewhere), block r to rank r;
     * alltoall: in and out hold size * len bytes, block r of in to rank r. */
    int32_t (*gather)(void *h, const void *in, uint64_t len, void *out, uint32_t root);
    int32_t (*scatter)(void *h, const void *in, uint64_t len, void *out, uint32_t root);
    int32_t (*alltoall)(void *h, const void *in, uint64_t len, void *out);
} rfx_comm;

/* Where a device function's data is (ABI 2). */
enum { RFX_DEVICE_CUDA = 1, RFX_DEVICE_HOST = 2 };
typedef struct rfx_device {
    uint32_t kind;      /* RFX_DEVICE_CUDA, or RFX_DEVICE_HOST (RFX_DEVICE=host: host memory) */
    uint32_t ordinal;   /* the device among those the executor sees */
    uint64_t in;        /* device address (CUdeviceptr) of the input: size bytes */
    uint64_t out;       /* device address of the output buffer: out_capacity bytes */
    void *stream;       /* the CUstream to queue kernels on; NULL on the host device */
} rfx_device;

typedef struct rfx_context {
    uint32_t abi_version;   /* RFX_ABI_VERSION of the executor (or later) */
    uint32_t rank;          /* this instance in a group invocation; 0 otherwise */
    uint32_t size;          /* instances in the group; 1 otherwise */
    uint32_t out_capacity;  /* bytes the function may write to out */
    uint64_t invocation_id;
    const rfx_comm *comm;   /* the group's communicator; NULL for a single invocation */
    const rfx_device *device; /* ABI 2: a device function's buffers; NULL otherwise */
} rfx_context;

/* Marks `name` as an extended-ABI function: exports `const uint32_t rfx_abi_name = 1`. */
#define RFX_EXTENDED(name) \
    __attribute__((visibility("default"))) const uint32_t rfx_abi_##name = RFX_ABI_VERSION

/* Marks `name` as a device function (and an extended-ABI one): its input and output live in
 * device memory, see rfx_device. */
#define RFX_DEVICE_FUNCTION(name) \
    RFX_EXTENDED(name); \
    __attribute__((visibility("default"))) const uint32_t rfx_device_##name = 1

#endif /* RFX_H */
