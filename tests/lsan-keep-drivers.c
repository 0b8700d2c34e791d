/* lsan-keep-drivers.c: preloaded (LD_PRELOAD) into the sanitizer build's
 * unit and end-to-end tests so that LeakSanitizer judges tapedeck's
 * memory and not the Vulkan drivers'.
 *
 * Why: Debian 12's lavapipe (mesa-vulkan-drivers 22.3.6-1+deb12u2)
 * keeps one 128-byte realloc'd block per process in one of its globals
 * and never frees it. That is no leak while the driver is loaded, but the
 * Vulkan loader unloads the driver (dlclose) at vkDestroyInstance, and at
 * exit LeakSanitizer finds the block unreachable. By then the driver's
 * code is unmapped, so the report's stack reads "<unknown module>" and no
 * suppression by module or function name can match it.
 *
 * What: this dlclose leaves the Vulkan drivers (libvulkan_*.so: Mesa's
 * lavapipe, ANV, RADV) loaded and passes every other handle to the real
 * dlclose. tapedeck's own leaks are still found (it hands the drivers
 * no allocator callbacks or user data, so no driver global holds one of
 * its blocks), now with the drivers' frames named where they take part. Built
 * by the Makefile with SANITIZE=1 (no sanitizer flags of its own); the
 * sanitizer then needs verify_asan_link_order=0, since a preloaded
 * library comes before its runtime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <string.h>

static int is_vulkan_driver(void *handle)
{
    struct link_map *map = NULL;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || !map || !map->l_name)
        return 0;
    const char *slash = strrchr(map->l_name, '/');
    const char *base = slash ? slash + 1 : map->l_name;
    return strncmp(base, "libvulkan_", 10) == 0;
}

int dlclose(void *handle)
{
    static int (*real_dlclose)(void *);
    if (!real_dlclose)
        real_dlclose = (int (*)(void *))dlsym(RTLD_NEXT, "dlclose");
    if (is_vulkan_driver(handle))
        return 0; /* stays loaded until the process ends */
    return real_dlclose ? real_dlclose(handle) : -1;
}
