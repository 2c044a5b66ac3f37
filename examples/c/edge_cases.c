/* Edge cases for executors/tests/abi.rs, not an example to follow.
 * Built twice, with -DRFX_VARIANT=1 and -DRFX_VARIANT=2, and linked with -z nodelete so that
 * dlclose never unloads it (a library left loaded under a reused /proc/self/fd/N name).
 */
#include <stdint.h>
#include <string.h>

#include "rfx.h"

#ifndef RFX_VARIANT
#define RFX_VARIANT 0
#endif

/* Writes RFX_VARIANT as one uint32. */
uint32_t variant(void *in, uint32_t size, void *out)
{
    uint32_t v = RFX_VARIANT;
    (void)in;
    (void)size;
    memcpy(out, &v, 4);
    return 4;
}

/* A marker claiming an extended ABI version that does not exist. */
__attribute__((visibility("default"))) const uint32_t rfx_abi_bad_marker = 7;
uint32_t bad_marker(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    (void)ctx;
    (void)in;
    (void)size;
    (void)out;
    return 0;
}
