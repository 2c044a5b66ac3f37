/* A device function: SAXPY on invocation input, run on the lease's GPU.
 *
 * Input:  float a, uint32_t n, float x[n], float y[n]   (little-endian, packed)
 * Output: float r[n] = a * x + y
 *
 * The executor copies the input into device memory and gives the function its address
 * (ctx->device->in) and that of the output buffer (ctx->device->out). On a GPU the function
 * queues its kernel on ctx->device->stream: the PTX below, loaded through the CUDA driver
 * API, which it finds in the executor (no CUDA toolkit needed to build this file). On the
 * host reference device (RFX_DEVICE=host, the tests) the same buffers are host memory and it
 * computes on the CPU.
 *
 * Build: cc -shared -fPIC -I examples/c examples/c/gpu_functions.c -o libgpu_functions.so
 */
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rfx.h"

/* y = a * x + y on n floats, one thread per element in a grid-stride loop.
 * device/tests/ptx.rs assembles this text with ptxas. */
/* PTX BEGIN */
static const char SAXPY_PTX[] =
    ".version 7.0\n"
    ".target sm_70\n"
    ".address_size 64\n"
    ".visible .entry saxpy(.param .f32 a, .param .u64 x, .param .u64 y, .param .u64 n)\n"
    "{\n"
    "    .reg .pred %p;\n"
    "    .reg .b32 %r<5>;\n"
    "    .reg .b64 %rd<10>;\n"
    "    .reg .f32 %f<4>;\n"
    "    ld.param.f32 %f1, [a];\n"
    "    ld.param.u64 %rd1, [x];\n"
    "    ld.param.u64 %rd2, [y];\n"
    "    ld.param.u64 %rd3, [n];\n"
    "    cvta.to.global.u64 %rd1, %rd1;\n"
    "    cvta.to.global.u64 %rd2, %rd2;\n"
    "    mov.u32 %r1, %ctaid.x;\n"
    "    mov.u32 %r2, %ntid.x;\n"
    "    mov.u32 %r3, %tid.x;\n"
    "    mul.wide.u32 %rd4, %r1, %r2;\n"
    "    cvt.u64.u32 %rd5, %r3;\n"
    "    add.u64 %rd4, %rd4, %rd5;\n"
    "    mov.u32 %r4, %nctaid.x;\n"
    "    mul.wide.u32 %rd6, %r4, %r2;\n"
    "LOOP:\n"
    "    setp.ge.u64 %p, %rd4, %rd3;\n"
    "    @%p bra DONE;\n"
    "    shl.b64 %rd7, %rd4, 2;\n"
    "    add.u64 %rd8, %rd1, %rd7;\n"
    "    add.u64 %rd9, %rd2, %rd7;\n"
    "    ld.global.f32 %f2, [%rd8];\n"
    "    ld.global.f32 %f3, [%rd9];\n"
    "    fma.rn.f32 %f3, %f1, %f2, %f3;\n"
    "    st.global.f32 [%rd9], %f3;\n"
    "    add.u64 %rd4, %rd4, %rd6;\n"
    "    bra.uni LOOP;\n"
    "DONE:\n"
    "    ret;\n"
    "}\n";
/* PTX END */

/* The few driver entry points used, as the driver declares them. */
typedef int (*cu_module_load_data)(void **module, const void *image);
typedef int (*cu_module_get_function)(void **fn, void *module, const char *name);
typedef int (*cu_memcpy_dtod_async)(uint64_t dst, uint64_t src, size_t bytes, void *stream);
typedef int (*cu_launch_kernel)(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                unsigned by, unsigned bz, unsigned shared, void *stream,
                                void **params, void **extra);

static void *kernel;
static cu_memcpy_dtod_async memcpy_dtod;
static cu_launch_kernel launch;

static uint32_t fail(void *out, uint32_t cap, const char *why) {
    size_t n = strlen(why) + 1;
    if (n <= cap) memcpy(out, why, n);
    return RFX_FAILED;
}

/* Loads the kernel into the executor's (current) CUDA context, once. */
static const char *load_kernel(void) {
    if (kernel) return NULL;
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!cuda) cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) return "libcuda.so.1 not found";
    cu_module_load_data load = (cu_module_load_data)dlsym(cuda, "cuModuleLoadData");
    cu_module_get_function get = (cu_module_get_function)dlsym(cuda, "cuModuleGetFunction");
    memcpy_dtod = (cu_memcpy_dtod_async)dlsym(cuda, "cuMemcpyDtoDAsync_v2");
    launch = (cu_launch_kernel)dlsym(cuda, "cuLaunchKernel");
    if (!load || !get || !memcpy_dtod || !launch) return "CUDA driver entry points missing";
    void *module = NULL;
    if (load(&module, SAXPY_PTX) != 0) return "cuModuleLoadData failed";
    if (get(&kernel, module, "saxpy") != 0) return "cuModuleGetFunction failed";
    return NULL;
}

RFX_DEVICE_FUNCTION(saxpy);
uint32_t saxpy(const rfx_context *ctx, const void *in, uint32_t size, void *out) {
    const rfx_device *dev = ctx->abi_version >= 2 ? ctx->device : NULL;
    if (!dev) return fail(out, ctx->out_capacity, "saxpy needs a device");
    /* The header from the host copy of the input, the arrays from the device's. */
    float a;
    uint32_t n;
    if (size < 8) return fail(out, ctx->out_capacity, "input shorter than its header");
    memcpy(&a, in, 4);
    memcpy(&n, (const char *)in + 4, 4);
    uint64_t bytes = (uint64_t)n * 4;
    if (size != 8 + 2 * bytes) return fail(out, ctx->out_capacity, "input is not a, n, x[n], y[n]");
    if (bytes > ctx->out_capacity) return fail(out, ctx->out_capacity, "output buffer too small");
    uint64_t x = dev->in + 8, y = dev->in + 8 + bytes, r = dev->out;
    if (dev->kind == RFX_DEVICE_HOST) {
        const float *hx = (const float *)(uintptr_t)x, *hy = (const float *)(uintptr_t)y;
        float *hr = (float *)(uintptr_t)r;
        for (uint32_t i = 0; i < n; i++) hr[i] = a * hx[i] + hy[i];
        return (uint32_t)bytes;
    }
    if (dev->kind != RFX_DEVICE_CUDA) return fail(out, ctx->out_capacity, "unknown device kind");
    const char *why = load_kernel();
    if (why) return fail(out, ctx->out_capacity, why);
    /* r = y, then r = a * x + r, both queued on the executor's stream. */
    if (n == 0) return 0;
    if (memcpy_dtod(r, y, bytes, dev->stream) != 0) return fail(out, ctx->out_capacity, "copy failed");
    uint64_t count = n;
    void *params[] = {&a, &x, &r, &count};
    unsigned blocks = (unsigned)((count + 255) / 256);
    if (blocks > 4096) blocks = 4096;
    if (launch(kernel, blocks, 1, 1, 256, 1, 1, 0, dev->stream, params, NULL) != 0)
        return fail(out, ctx->out_capacity, "kernel launch failed");
    return (uint32_t)bytes;
}
