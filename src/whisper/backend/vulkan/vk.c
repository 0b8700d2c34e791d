/*
 * vk.c: the Vulkan device layer (vk.h): loader, device choice, memory,
 * pipelines, one command buffer at a time, timestamps, fault injection.
 */
#include "whisper/backend/vulkan/vk.h"
#include "whisper/backend/vulkan/shaders.h"
#include "whisper/backend/vulkan/probe.h"

#include <ctype.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STAGING_BYTES (16u << 20)
#define MAX_QUERIES 8192
#define MAX_PROF 64
#define MAX_KEPT 16
#define STATS_CHARS 320 /* a pipeline's statistics as text */
#define WAIT_NS (120ull * 1000 * 1000 * 1000) /* a step that takes 2 minutes is a hung device */
/* ... unless the device is the CPU (lavapipe), whose speed is the host's
 * share of its cores: tiny.en's encoder took 40 s on a quiet 2-core VM and
 * over 120 s at a load average of 17 (2026-12-06) */
#define WAIT_CPU_NS (1200ull * 1000 * 1000 * 1000)

/* ------------------------------------------------------------------ */
/* Fault injection and live counts (process-wide; tests only set them). */

/* Atomic: devices are opened, closed and used from several threads (one
 * worker's streams), and the counts must stay exact for the tests. */
static _Atomic long g_fail_at; /* allocations until the failing one; 0 = none */
static _Atomic long g_fail_submit; /* submissions until the failing one; 0 = none (set from a
                                    * signal handler by a test: lock-free, so signal-safe) */
static _Atomic long g_fail_wait; /* host waits until the one that times out; 0 = none */
static _Atomic long g_live;

static _Atomic int g_capture_stats; /* td_vk_capture_stats */

void td_vk_capture_stats(int on)
{
    g_capture_stats = on;
}

void td_vk_fail_alloc(long n)
{
    g_fail_at = n;
}

void td_vk_fail_submit(long n)
{
    g_fail_submit = n;
}

void td_vk_fail_wait(long n)
{
    g_fail_wait = n;
}

long td_vk_live(void)
{
    return g_live;
}

/* 1 when this count down reaches its end: one decrement, whichever
 * thread gets there first. */
static int count_down(_Atomic long *left)
{
    long v = atomic_load(left);
    while (v > 0 && !atomic_compare_exchange_weak(left, &v, v - 1))
        ;
    return v == 1;
}

/* 1 when this allocation is the one to fail. */
static int inject(void)
{
    return count_down(&g_fail_at);
}

void *td_vk_malloc(size_t n)
{
    if (inject())
        return NULL;
    void *p = malloc(n ? n : 1);
    if (p)
        g_live++;
    return p;
}

void *td_vk_calloc(size_t n, size_t size)
{
    if (inject())
        return NULL;
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p)
        g_live++;
    return p;
}

void td_vk_free(void *p)
{
    if (p) {
        free(p);
        g_live--;
    }
}

/* VK_KHR_cooperative_matrix's structures, declared here under our own
 * names: Debian 12's Vulkan headers (1.3.239) predate it (1.3.255). The
 * layouts and values are the registry's. */
enum {
    KHR_CM_FEATURES_STYPE = 1000506000,     /* ..._PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR */
    KHR_CM_PROPERTIES_STYPE = 1000506001,   /* ..._COOPERATIVE_MATRIX_PROPERTIES_KHR */
    KHR_COMPONENT_FLOAT16 = 0, KHR_COMPONENT_FLOAT32 = 1, KHR_SCOPE_SUBGROUP = 3
};
typedef struct khr_cm_features {
    VkStructureType sType;
    void *pNext;
    VkBool32 cooperativeMatrix;
    VkBool32 cooperativeMatrixRobustBufferAccess;
} khr_cm_features;
typedef struct khr_cm_props {
    VkStructureType sType;
    void *pNext;
    uint32_t MSize, NSize, KSize;
    int32_t AType, BType, CType, ResultType; /* VkComponentTypeKHR */
    VkBool32 saturatingAccumulation;
    int32_t scope;                           /* VkScopeKHR */
} khr_cm_props;
typedef VkResult(VKAPI_PTR *khr_cm_props_fn)(VkPhysicalDevice, uint32_t *, khr_cm_props *);
static khr_cm_props_fn p_khr_cm_props;

/* ------------------------------------------------------------------ */
/* Loader                                                               */

#define GLOBAL_FNS(X) \
    X(vkCreateInstance) \
    X(vkEnumerateInstanceVersion)

#define INSTANCE_FNS(X) \
    X(vkDestroyInstance) \
    X(vkEnumeratePhysicalDevices) \
    X(vkGetPhysicalDeviceProperties) \
    X(vkGetPhysicalDeviceProperties2) \
    X(vkGetPhysicalDeviceFeatures2) \
    X(vkGetPhysicalDeviceQueueFamilyProperties) \
    X(vkGetPhysicalDeviceMemoryProperties) \
    X(vkGetPhysicalDeviceMemoryProperties2) \
    X(vkEnumerateDeviceExtensionProperties) \
    X(vkGetPhysicalDeviceCooperativeMatrixPropertiesNV) \
    X(vkCreateDevice) \
    X(vkGetDeviceProcAddr)

#define DEVICE_FNS(X) \
    X(vkDestroyDevice) \
    X(vkGetDeviceQueue) \
    X(vkCreateBuffer) \
    X(vkDestroyBuffer) \
    X(vkGetBufferMemoryRequirements) \
    X(vkAllocateMemory) \
    X(vkFreeMemory) \
    X(vkBindBufferMemory) \
    X(vkMapMemory) \
    X(vkUnmapMemory) \
    X(vkInvalidateMappedMemoryRanges) \
    X(vkGetBufferDeviceAddress) \
    X(vkCreateShaderModule) \
    X(vkDestroyShaderModule) \
    X(vkCreatePipelineLayout) \
    X(vkDestroyPipelineLayout) \
    X(vkCreateComputePipelines) \
    X(vkDestroyPipeline) \
    X(vkCreateCommandPool) \
    X(vkDestroyCommandPool) \
    X(vkAllocateCommandBuffers) \
    X(vkBeginCommandBuffer) \
    X(vkEndCommandBuffer) \
    X(vkResetCommandBuffer) \
    X(vkCmdBindPipeline) \
    X(vkCmdPushConstants) \
    X(vkCmdDispatch) \
    X(vkCmdDispatchIndirect) \
    X(vkCmdPipelineBarrier) \
    X(vkCmdCopyBuffer) \
    X(vkCmdFillBuffer) \
    X(vkCmdUpdateBuffer) \
    X(vkCreateFence) \
    X(vkDestroyFence) \
    X(vkResetFences) \
    X(vkWaitForFences) \
    X(vkQueueSubmit) \
    X(vkDeviceWaitIdle) \
    X(vkCreateQueryPool) \
    X(vkDestroyQueryPool) \
    X(vkCmdResetQueryPool) \
    X(vkCmdWriteTimestamp) \
    X(vkGetQueryPoolResults)

#define DECL(f) static PFN_##f p_##f;
GLOBAL_FNS(DECL)
INSTANCE_FNS(DECL)
#undef DECL

typedef struct dev_fns {
#define DECL(f) PFN_##f f;
    DEVICE_FNS(DECL)
#undef DECL
} dev_fns;

static void *g_lib;
static PFN_vkGetInstanceProcAddr p_vkGetInstanceProcAddr;
static int g_loaded;          /* 1 loaded, -1 failed (reason kept) */
static char g_load_reason[256];

/* Load the loader and its global entry points, once. */
static int load_loader(td_error *err)
{
    if (g_loaded == 0) {
        const char *names[] = {"libvulkan.so.1", "libvulkan.so"};
        for (size_t i = 0; i < 2 && !g_lib; i++)
            g_lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!g_lib) {
            const char *e = dlerror();
            snprintf(g_load_reason, sizeof g_load_reason, "no Vulkan loader (libvulkan.so.1): %s",
                     e ? e : "not found");
            g_loaded = -1;
        } else {
            p_vkGetInstanceProcAddr = (PFN_vkGetInstanceProcAddr)(uintptr_t)dlsym(
                g_lib, "vkGetInstanceProcAddr");
            if (!p_vkGetInstanceProcAddr) {
                snprintf(g_load_reason, sizeof g_load_reason,
                         "the Vulkan loader has no vkGetInstanceProcAddr");
                g_loaded = -1;
            } else {
                g_loaded = 1;
#define LOAD(f) p_##f = (PFN_##f)p_vkGetInstanceProcAddr(NULL, #f);
                GLOBAL_FNS(LOAD)
#undef LOAD
                if (!p_vkCreateInstance) {
                    snprintf(g_load_reason, sizeof g_load_reason,
                             "the Vulkan loader gives no vkCreateInstance");
                    g_loaded = -1;
                }
            }
        }
    }
    if (g_loaded < 0)
        return td_error_set(err, TD_EUNAVAILABLE, "vulkan: %s", g_load_reason);
    return TD_OK;
}

static int vk_rc(VkResult r)
{
    switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY:
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_OUT_OF_POOL_MEMORY:
    case VK_ERROR_FRAGMENTED_POOL:
        return TD_ENOMEM;
    case VK_ERROR_INCOMPATIBLE_DRIVER:
    case VK_ERROR_INITIALIZATION_FAILED:
    case VK_ERROR_EXTENSION_NOT_PRESENT:
    case VK_ERROR_FEATURE_NOT_PRESENT:
    case VK_ERROR_LAYER_NOT_PRESENT:
        return TD_EUNAVAILABLE;
    default:
        return TD_EENGINE;
    }
}

static const char *vk_str(VkResult r)
{
    switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "out of host memory";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "out of device memory";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "out of pool memory";
    case VK_ERROR_INITIALIZATION_FAILED: return "initialization failed";
    case VK_ERROR_DEVICE_LOST: return "device lost";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "no compatible driver (ICD)";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "extension not present";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "feature not present";
    case VK_ERROR_TOO_MANY_OBJECTS: return "too many objects";
    case VK_TIMEOUT: return "timeout";
    default: return "error";
    }
}

#define VKFAIL(err, r, what) \
    td_error_set(err, vk_rc(r), "vulkan: %s: %s (VkResult %d)", what, vk_str(r), (int)(r))

/* The loader's API version (instance_create): Vulkan 1.3's structures
 * are chained only where it and the device both have 1.3 */
static uint32_t g_inst_version;

/* An instance of API 1.2 or later. Called with g_inst_lock held. */
static int instance_create(VkInstance *out, td_error *err)
{
    int rc = load_loader(err);
    if (rc)
        return rc;
    uint32_t ver = VK_API_VERSION_1_0;
    if (p_vkEnumerateInstanceVersion && p_vkEnumerateInstanceVersion(&ver) != VK_SUCCESS)
        ver = VK_API_VERSION_1_0;
    if (ver < VK_API_VERSION_1_2)
        return td_error_set(err, TD_EUNAVAILABLE,
                            "vulkan: the loader offers API %u.%u, the backend needs 1.2",
                            VK_API_VERSION_MAJOR(ver), VK_API_VERSION_MINOR(ver));
    g_inst_version = ver;
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "tapedeck",
        .pEngineName = "tapedeck-whisper",
        .apiVersion = VK_API_VERSION_1_3,
    };
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                               .pApplicationInfo = &app};
    if (inject())
        return td_error_set(err, TD_ENOMEM, "vulkan: vkCreateInstance: out of host memory (injected)");
    VkResult r = p_vkCreateInstance(&ci, NULL, out);
    if (r != VK_SUCCESS)
        return VKFAIL(err, r, "vkCreateInstance");
#define LOAD(f) p_##f = (PFN_##f)p_vkGetInstanceProcAddr(*out, #f);
    INSTANCE_FNS(LOAD)
#undef LOAD
    p_khr_cm_props = (khr_cm_props_fn)p_vkGetInstanceProcAddr(
        *out, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
    if (!p_vkDestroyInstance || !p_vkEnumeratePhysicalDevices || !p_vkGetPhysicalDeviceProperties2 ||
        !p_vkGetPhysicalDeviceFeatures2 || !p_vkCreateDevice || !p_vkGetDeviceProcAddr ||
        !p_vkGetPhysicalDeviceMemoryProperties2 || !p_vkEnumerateDeviceExtensionProperties ||
        !p_vkGetPhysicalDeviceQueueFamilyProperties || !p_vkGetPhysicalDeviceMemoryProperties ||
        !p_vkGetPhysicalDeviceProperties) {
        if (p_vkDestroyInstance)
            p_vkDestroyInstance(*out, NULL);
        return td_error_set(err, TD_EUNAVAILABLE, "vulkan: the loader lacks instance functions");
    }
    return TD_OK;
}

/* The process's one VkInstance. Every device open on it and every listing
 * holds a reference, and so does the process itself from the instance's
 * creation until exit (or td_vk_release): a device closed and opened again
 * finds the same instance. NVIDIA's driver (580, H100) refused
 * vkCreateInstance with VK_ERROR_INCOMPATIBLE_DRIVER after about 32
 * create/destroy cycles in one process, each instance the only one (with
 * another instance alive, 64 cycles passed: the loader unloads the driver
 * with the last instance), which a worker reopening its engine a step down
 * after each out-of-memory failure could meet too. The
 * instance is not counted by td_vk_live (it outlives every device); the
 * exit handler destroys it when nothing uses it, so no leak checker sees
 * it. The lock also covers loading the loader. */
static pthread_mutex_t g_inst_lock = PTHREAD_MUTEX_INITIALIZER;
static VkInstance g_inst;
static long g_inst_refs;       /* devices and listings using g_inst, plus 1 for the process */
static pid_t g_inst_pid;       /* the process that made it (a forked child never destroys it) */
static int g_inst_atexit;      /* the exit handler is registered */

static void instance_release_locked(void)
{
    if (g_inst && g_inst_refs == 1 && getpid() == g_inst_pid) {
        p_vkDestroyInstance(g_inst, NULL);
        g_inst = VK_NULL_HANDLE;
        g_inst_refs = 0;
    }
}

static void instance_at_exit(void)
{
    if (pthread_mutex_trylock(&g_inst_lock) != 0)
        return; /* another thread is inside: leave it to the process's end */
    instance_release_locked();
    pthread_mutex_unlock(&g_inst_lock);
}

/* A reference to the process's instance, created on first use. */
static int instance_get(VkInstance *out, td_error *err)
{
    int rc = TD_OK;
    if (pthread_mutex_lock(&g_inst_lock) != 0)
        return td_error_set(err, TD_EENGINE, "vulkan: the instance lock failed");
    if (g_inst && getpid() != g_inst_pid) {
        /* a forked child: the parent's instance is not its to use or destroy */
        g_inst = VK_NULL_HANDLE;
        g_inst_refs = 0;
    }
    if (!g_inst) {
        rc = instance_create(&g_inst, err);
        if (rc == TD_OK) {
            g_inst_refs = 1; /* the process's own */
            g_inst_pid = getpid();
            if (!g_inst_atexit && atexit(instance_at_exit) == 0)
                g_inst_atexit = 1;
        } else {
            g_inst = VK_NULL_HANDLE;
        }
    }
    if (rc == TD_OK) {
        g_inst_refs++;
        *out = g_inst;
    }
    pthread_mutex_unlock(&g_inst_lock);
    return rc;
}

static void instance_put(VkInstance inst)
{
    if (!inst)
        return;
    pthread_mutex_lock(&g_inst_lock);
    if (inst == g_inst && g_inst_refs > 1)
        g_inst_refs--;
    pthread_mutex_unlock(&g_inst_lock);
}

void td_vk_release(void)
{
    pthread_mutex_lock(&g_inst_lock);
    instance_release_locked();
    pthread_mutex_unlock(&g_inst_lock);
}

int td_vk_instance_refs(void)
{
    pthread_mutex_lock(&g_inst_lock);
    long n = g_inst ? g_inst_refs - 1 : -1;
    pthread_mutex_unlock(&g_inst_lock);
    return (int)n;
}

/* ------------------------------------------------------------------ */
/* Device facts                                                         */

typedef struct pdev_facts {
    td_vk_info info;
    int has_pci_ext, has_budget_ext;
    int has_exec_props;    /* VK_KHR_pipeline_executable_properties (td_vk_capture_stats) */
    int nv_coopmat;        /* VK_NV_cooperative_matrix usable: enable it and its features */
    int khr_sg_control;    /* the KHR family's subgroup size is not the device's default:
                            * enable subgroup size control and require it (Vulkan 1.3) */
    int queue_family;      /* a compute queue family, -1 none */
    uint32_t ts_bits;      /* timestamp valid bits of that family */
    float ts_period;       /* ns per tick */
    uint32_t max_push;
    uint64_t max_alloc;
} pdev_facts;

static int has_ext(const VkExtensionProperties *e, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(e[i].extensionName, name) == 0)
            return 1;
    return 0;
}

#ifndef VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME
#define VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME "VK_KHR_cooperative_matrix"
#endif


/* shaders/coopmat.glsl's KHR families: the family's number, the fragment
 * shape M x N x K and the subgroup size its compilations are written
 * for, in the order they are preferred */
static const struct {
    int family;
    uint32_t m, n, k, sg;
} khr_families[] = {{1, 16, 16, 16, 32}, {3, 8, 16, 16, 16}, {2, 8, 8, 16, 8}, {4, 8, 8, 8, 8}};

/* What td_vk_info says of the matrix engines, in words: "NV 16x16x16",
 * "KHR 8x8x16, subgroups of 8", both, or "none". */
void td_vk_matrix_note(const td_vk_info *in, char *out, size_t cap)
{
    if (!cap)
        return;
    /* as td_vk_open chooses: NV's where usable, unless TD_VULKAN_COOPMAT
     * says khr; else the KHR family, unless it says nv */
    const char *want = getenv("TD_VULKAN_COOPMAT");
    int khr_only = want && strcmp(want, "khr") == 0, nv_only = want && strcmp(want, "nv") == 0;
    if (in->has_coopmat_nv && !khr_only) {
        snprintf(out, cap, "NV 16x16x16");
        return;
    }
    for (size_t f = 0; f < sizeof khr_families / sizeof khr_families[0]; f++)
        if (khr_families[f].family == in->coopmat_family && !nv_only) {
            snprintf(out, cap, "KHR %ux%ux%u, subgroups of %u%s", khr_families[f].m,
                     khr_families[f].n, khr_families[f].k, khr_families[f].sg,
                     td_vks_matmul_cmk_CMK101_words ? "" : " (its shaders not built)");
            return;
        }
    snprintf(out, cap, "none");
}

/* The first KHR family pd can run: its f16 x f16 -> f32 shape at subgroup
 * scope, with its subgroup size the device's own or one that subgroup
 * size control can require of a compute shader (*control then 1). 0
 * none. */
static int khr_family_pick(VkPhysicalDevice pd, int subgroup, const VkPhysicalDeviceVulkan13Properties *p13,
                           const VkPhysicalDeviceVulkan13Features *f13, int *control)
{
    *control = 0;
    if (!p_khr_cm_props)
        return 0;
    khr_cm_props props[64];
    uint32_t np = 0;
    if (p_khr_cm_props(pd, &np, NULL) != VK_SUCCESS)
        return 0;
    if (np > 64)
        np = 64;
    for (uint32_t i = 0; i < np; i++)
        props[i] = (khr_cm_props){.sType = (VkStructureType)KHR_CM_PROPERTIES_STYPE};
    VkResult r = p_khr_cm_props(pd, &np, props);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE)
        return 0;
    for (size_t f = 0; f < sizeof khr_families / sizeof khr_families[0]; f++) {
        int shape = 0;
        for (uint32_t i = 0; i < np && !shape; i++)
            shape = props[i].MSize == khr_families[f].m && props[i].NSize == khr_families[f].n &&
                    props[i].KSize == khr_families[f].k &&
                    props[i].AType == KHR_COMPONENT_FLOAT16 &&
                    props[i].BType == KHR_COMPONENT_FLOAT16 &&
                    props[i].CType == KHR_COMPONENT_FLOAT32 &&
                    props[i].ResultType == KHR_COMPONENT_FLOAT32 &&
                    props[i].scope == KHR_SCOPE_SUBGROUP;
        if (!shape)
            continue;
        uint32_t sg = khr_families[f].sg;
        if ((uint32_t)subgroup == sg)
            return khr_families[f].family;
        if (p13 && f13->subgroupSizeControl && f13->computeFullSubgroups &&
            p13->minSubgroupSize <= sg && sg <= p13->maxSubgroupSize &&
            (p13->requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT)) {
            *control = 1;
            return khr_families[f].family;
        }
    }
    return 0;
}

/* Everything the backend asks of pd, and whether it has it. */
static int facts_read(VkPhysicalDevice pd, pdev_facts *f, td_error *err)
{
    memset(f, 0, sizeof *f);
    f->queue_family = -1;
    td_vk_info *in = &f->info;
    in->free_bytes = -1;

    uint32_t n_ext = 0;
    VkResult r = p_vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, NULL);
    if (r != VK_SUCCESS)
        return VKFAIL(err, r, "vkEnumerateDeviceExtensionProperties");
    VkExtensionProperties *ext = td_vk_calloc(n_ext, sizeof *ext);
    if (!ext)
        return td_error_set(err, TD_ENOMEM, "vulkan: out of memory listing extensions");
    r = p_vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, ext);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        td_vk_free(ext);
        return VKFAIL(err, r, "vkEnumerateDeviceExtensionProperties");
    }
    f->has_pci_ext = has_ext(ext, n_ext, VK_EXT_PCI_BUS_INFO_EXTENSION_NAME);
    f->has_budget_ext = has_ext(ext, n_ext, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
    in->has_coopmat = has_ext(ext, n_ext, VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME);
    f->has_exec_props = has_ext(ext, n_ext, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
    int nv_ext = has_ext(ext, n_ext, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
    int sm_ext = has_ext(ext, n_ext, VK_NV_SHADER_SM_BUILTINS_EXTENSION_NAME);
    int amd_core_ext = has_ext(ext, n_ext, VK_AMD_SHADER_CORE_PROPERTIES_EXTENSION_NAME);
    td_vk_free(ext);

    VkPhysicalDevicePCIBusInfoPropertiesEXT pci = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PCI_BUS_INFO_PROPERTIES_EXT};
    /* the multiprocessor count (ops.c's split of K): NVIDIA's and AMD's
     * extensions, each chained only where advertised */
    VkPhysicalDeviceShaderSMBuiltinsPropertiesNV smb = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV};
    VkPhysicalDeviceShaderCorePropertiesAMD amdc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_CORE_PROPERTIES_AMD};
    VkPhysicalDeviceDriverProperties drv = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceIDProperties id = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES,
                                       .pNext = &drv};
    VkPhysicalDeviceSubgroupProperties sg = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
                                             .pNext = &id};
    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, .pNext = &sg};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &m3};
    VkPhysicalDeviceProperties p1;
    p_vkGetPhysicalDeviceProperties(pd, &p1);
    if (p1.apiVersion >= VK_API_VERSION_1_2) {
        void *tail = NULL;
        if (sm_ext) {
            smb.pNext = tail;
            tail = &smb;
        }
        if (amd_core_ext) {
            amdc.pNext = tail;
            tail = &amdc;
        }
        if (f->has_pci_ext) {
            pci.pNext = tail;
            tail = &pci;
        }
        drv.pNext = tail;
        p_vkGetPhysicalDeviceProperties2(pd, &p2);
    } else {
        p2.properties = p1;
    }
    const VkPhysicalDeviceProperties *p = &p2.properties;
    snprintf(in->name, sizeof in->name, "%s", p->deviceName);
    in->api_version = p->apiVersion;
    in->driver_version = p->driverVersion;
    in->vendor_id = p->vendorID;
    in->device_id = p->deviceID;
    in->device_type = (int)p->deviceType;
    in->max_shared = p->limits.maxComputeSharedMemorySize;
    in->max_invocations = p->limits.maxComputeWorkGroupInvocations;
    if (p->limits.maxComputeWorkGroupSize[0] < in->max_invocations)
        in->max_invocations = p->limits.maxComputeWorkGroupSize[0];
    f->max_push = p->limits.maxPushConstantsSize;
    f->ts_period = p->limits.timestampPeriod;
    if (p1.apiVersion >= VK_API_VERSION_1_2) {
        in->subgroup_size = (int)sg.subgroupSize;
        f->max_alloc = m3.maxMemoryAllocationSize;
        const uint8_t *u = id.deviceUUID;
        snprintf(in->uuid, sizeof in->uuid,
                 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                 u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                 u[14], u[15]);
        snprintf(in->driver, sizeof in->driver, "%s %s", drv.driverName, drv.driverInfo);
        if (sm_ext)
            in->sm_count = (int)smb.shaderSMCount;
        else if (amd_core_ext)
            in->sm_count = (int)(amdc.shaderEngineCount * amdc.shaderArraysPerEngineCount *
                                 amdc.computeUnitsPerShaderArray);
        if (in->sm_count < 0 || in->sm_count > 1 << 16)
            in->sm_count = 0;
        if (f->has_pci_ext)
            snprintf(in->pci, sizeof in->pci, "%04x:%02x:%02x.%x", pci.pciDomain & 0xffff,
                     pci.pciBus & 0xff, pci.pciDevice & 0x1f, pci.pciFunction & 0x7);
    }

    /* memory: device-local heaps, and what the budget says is free */
    VkPhysicalDeviceMemoryBudgetPropertiesEXT bud = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
    VkPhysicalDeviceMemoryProperties2 mp = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
                                            .pNext = f->has_budget_ext ? &bud : NULL};
    p_vkGetPhysicalDeviceMemoryProperties2(pd, &mp);
    int64_t freeb = 0;
    for (uint32_t h = 0; h < mp.memoryProperties.memoryHeapCount; h++) {
        if (!(mp.memoryProperties.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT))
            continue;
        in->local_bytes += (int64_t)mp.memoryProperties.memoryHeaps[h].size;
        if (f->has_budget_ext && bud.heapBudget[h] > bud.heapUsage[h])
            freeb += (int64_t)(bud.heapBudget[h] - bud.heapUsage[h]);
    }
    if (f->has_budget_ext)
        in->free_bytes = freeb;

    /* a compute queue */
    uint32_t nq = 0;
    p_vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    VkQueueFamilyProperties qf[32];
    if (nq > 32)
        nq = 32;
    p_vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    for (uint32_t i = 0; i < nq; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
            f->queue_family = (int)i;
            f->ts_bits = qf[i].timestampValidBits;
            break;
        }

    /* what the backend needs */
    const char *why = NULL;
    if (p1.apiVersion < VK_API_VERSION_1_2) {
        why = "Vulkan 1.2 needed";
    } else if (f->queue_family < 0) {
        why = "no compute queue";
    } else if (f->max_push < 128) {
        why = "push constants under 128 bytes";
    } else if (in->max_shared < 16384) {
        why = "under 16 KiB of shared memory";
    } else {
        VkPhysicalDeviceVulkan12Features f12 = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
        VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                        .pNext = &f12};
        p_vkGetPhysicalDeviceFeatures2(pd, &f2);
        if (!f12.bufferDeviceAddress)
            why = "no buffer device address";
        /* the matrix-engine path (matmul_cm.comp): the NV extension with
         * its feature, halves, the Vulkan memory model, subgroups of 32 and
         * a 16 x 16 x 16 f16 x f16 -> f32 subgroup shape */
        if (!why && nv_ext && p_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV &&
            in->subgroup_size == 32 && f12.shaderFloat16 && f12.vulkanMemoryModel) {
            VkPhysicalDeviceCooperativeMatrixFeaturesNV cm = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
            f2.pNext = &cm;
            f12.pNext = NULL;
            p_vkGetPhysicalDeviceFeatures2(pd, &f2);
            VkCooperativeMatrixPropertiesNV props[64];
            uint32_t np = 0;
            if (cm.cooperativeMatrix &&
                p_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(pd, &np, NULL) == VK_SUCCESS) {
                if (np > 64)
                    np = 64;
                for (uint32_t i = 0; i < np; i++)
                    props[i] = (VkCooperativeMatrixPropertiesNV){
                        .sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV};
                r = p_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(pd, &np, props);
                for (uint32_t i = 0; (r == VK_SUCCESS || r == VK_INCOMPLETE) && i < np; i++)
                    if (props[i].MSize == 16 && props[i].NSize == 16 && props[i].KSize == 16 &&
                        props[i].AType == VK_COMPONENT_TYPE_FLOAT16_NV &&
                        props[i].BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
                        props[i].CType == VK_COMPONENT_TYPE_FLOAT32_NV &&
                        props[i].DType == VK_COMPONENT_TYPE_FLOAT32_NV &&
                        props[i].scope == VK_SCOPE_SUBGROUP_NV)
                        f->nv_coopmat = 1;
            }
        }
        /* the KHR extension (matmul_cmk.comp): a family of coopmat.glsl's
         * whose shape the device lists, and halves and the memory model */
        if (!why && in->has_coopmat) {
            khr_cm_features cm = {.sType = (VkStructureType)KHR_CM_FEATURES_STYPE};
            VkPhysicalDeviceVulkan13Features f13 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES, .pNext = &cm};
            VkPhysicalDeviceVulkan13Properties p13 = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_PROPERTIES};
            int v13 = p1.apiVersion >= VK_API_VERSION_1_3 && g_inst_version >= VK_API_VERSION_1_3;
            f12.pNext = v13 ? (void *)&f13 : (void *)&cm;
            f2.pNext = &f12;
            p_vkGetPhysicalDeviceFeatures2(pd, &f2);
            if (v13) {
                VkPhysicalDeviceProperties2 pp = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                                  .pNext = &p13};
                p_vkGetPhysicalDeviceProperties2(pd, &pp);
            }
            if (cm.cooperativeMatrix && f12.shaderFloat16 && f12.vulkanMemoryModel)
                in->coopmat_family = khr_family_pick(pd, in->subgroup_size, v13 ? &p13 : NULL,
                                                     &f13, &f->khr_sg_control);
        }
    }
    in->has_coopmat_nv = f->nv_coopmat;
    in->usable = why == NULL;
    snprintf(in->reason, sizeof in->reason, "%s", why ? why : "");
    return TD_OK;
}

/* ------------------------------------------------------------------ */
/* Probe and list                                                       */

static int devices_get(VkInstance inst, VkPhysicalDevice **pds, uint32_t *n, td_error *err)
{
    *pds = NULL;
    *n = 0;
    VkResult r = p_vkEnumeratePhysicalDevices(inst, n, NULL);
    if (r != VK_SUCCESS)
        return VKFAIL(err, r, "vkEnumeratePhysicalDevices");
    if (*n == 0)
        return td_error_set(err, TD_EUNAVAILABLE, "vulkan: no device (no ICD found by the loader)");
    *pds = td_vk_calloc(*n, sizeof **pds);
    if (!*pds)
        return td_error_set(err, TD_ENOMEM, "vulkan: out of memory listing devices");
    r = p_vkEnumeratePhysicalDevices(inst, n, *pds);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        td_vk_free(*pds);
        *pds = NULL;
        return VKFAIL(err, r, "vkEnumeratePhysicalDevices");
    }
    return TD_OK;
}

int td_vk_list(td_vk_info *out, int max, int *n_out, td_error *err)
{
    *n_out = 0;
    VkInstance inst;
    int rc = instance_get(&inst, err);
    if (rc)
        return rc;
    VkPhysicalDevice *pds;
    uint32_t n;
    rc = devices_get(inst, &pds, &n, err);
    if (rc)
        goto out_inst;
    for (uint32_t i = 0; i < n && (int)i < max; i++) {
        pdev_facts f;
        rc = facts_read(pds[i], &f, err);
        if (rc)
            break;
        out[i] = f.info;
        *n_out = (int)i + 1;
    }
    td_vk_free(pds);
out_inst:
    instance_put(inst);
    return rc;
}

int td_vk_probe(td_error *err)
{
    td_vk_info info[16];
    int n = 0;
    int rc = td_vk_list(info, 16, &n, err);
    if (rc)
        return rc;
    char why[512] = "";
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        if (info[i].usable)
            return TD_OK;
        if (o >= sizeof why - 1)
            break; /* full: the message names the first devices */
        o += (size_t)snprintf(why + o, sizeof why - o, "%s%s: %s", i ? "; " : "", info[i].name,
                              info[i].reason);
    }
    return td_error_set(err, TD_EUNAVAILABLE, "vulkan: no usable device (%s)", why);
}

/* ------------------------------------------------------------------ */
/* The device                                                           */

struct td_vk_pipe {
    VkPipeline pipe;
    VkPipelineLayout layout;
    uint32_t push_bytes;
    char name[32];
    int prof;              /* index in the profile table, -1 none yet */
    char stats[STATS_CHARS]; /* the driver's statistics (td_vk_capture_stats), else "" */
};

struct td_vk {
    VkInstance inst;
    VkPhysicalDevice pd;
    VkDevice dev;
    VkQueue queue;
    dev_fns f;
    pdev_facts facts;
    VkPhysicalDeviceMemoryProperties mem;
    VkCommandPool pool;
    VkCommandBuffer cmd;   /* the one being recorded or replayed */
    VkCommandBuffer cmd0;  /* the one-time one */
    struct {
        uint64_t key;
        VkCommandBuffer cmd;
        int valid;
        unsigned long used;
    } kept[MAX_KEPT];      /* recorded once per shape, replayed (td_vk_begin_cached) */
    int cur_kept;          /* index into kept being recorded or replayed, -1 none */
    int replaying;
    unsigned long uses;
    VkFence fence;
    td_vk_buf staging;
    VkQueryPool qpool;     /* VK_NULL_HANDLE when timestamps are unsupported */
    int recording;
    int concurrent;
    int pending;           /* a command recorded since the last barrier */
    int transfer_pending;  /* a copy or fill recorded since the last barrier */
    /* a recording ended by td_vk_submit_later, submitted with the next */
    VkCommandBuffer later;
    int later_kept;        /* its kept slot, -1 none */
    unsigned long later_lost; /* submissions that failed with a kept one in them */
    td_error later_err;    /* the last such failure */
    int wide_barriers;     /* TD_VULKAN_BARRIER=wide: every barrier as a transfer's */
    int input_host;        /* TD_VULKAN_INPUT_MEM=host: TD_VK_MEM_INPUT as TD_VK_MEM_HOST */
    /* a submission that never finished (its wait timed out) or a lost
     * device: its command buffers and fence may still be in use, so
     * nothing is recorded or submitted again, and close waits for the
     * device before destroying anything */
    int broken;
    int profiling;
    int n_queries;
    int query_pipe[MAX_QUERIES / 2];
    uint32_t query_groups[MAX_QUERIES / 2]; /* workgroups, 0 indirect */
    td_vk_prof prof[MAX_PROF];
    int n_prof;
    td_vk_disp last[TD_VK_PROFILE_LAST]; /* the latest timed dispatches, a ring */
    uint64_t n_last;       /* dispatches ever put in it (the next goes to n_last % size) */
    /* the driver's pipeline statistics, where td_vk_capture_stats asked
     * for them at open and the device has the extension */
    PFN_vkGetPipelineExecutablePropertiesKHR get_exec_props;
    PFN_vkGetPipelineExecutableStatisticsKHR get_exec_stats;
};

const td_vk_info *td_vk_device_info(const td_vk *vk)
{
    return &vk->facts.info;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 1 when want names this device (PCI address or UUID). */
static int device_matches(const td_vk_info *in, const char *want)
{
    if (strchr(want, ':')) {
        if (!in->pci[0])
            return 0;
        size_t lw = strlen(want), lp = strlen(in->pci);
        /* "00:06.0" is "0000:00:06.0" */
        const char *p = in->pci;
        if (lw == lp - 5 && strncmp(in->pci, "0000:", 5) == 0)
            p = in->pci + 5;
        return strcasecmp(p, want) == 0;
    }
    const char *w = want;
    if (strncasecmp(w, "GPU-", 4) == 0)
        w += 4;
    const char *u = in->uuid + 4;
    int nd = 0;
    while (*w || *u) {
        if (*w == '-') {
            w++;
            continue;
        }
        if (*u == '-') {
            u++;
            continue;
        }
        if (!*w || !*u || hexval(*w) < 0 || hexval(*w) != hexval(*u))
            return 0;
        w++;
        u++;
        nd++;
    }
    return nd == 32;
}

/* TD_VK_MEM_INPUT's memory where the device has it: shaders read it
 * without a round trip over PCIe (about a microsecond each on an H100's
 * host memory), the host writes it through the BAR */
#define HOST_MEM (VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)
#define INPUT_NEAR (VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | HOST_MEM)

static int find_mem_type(const td_vk *vk, uint32_t bits, VkMemoryPropertyFlags want)
{
    for (uint32_t i = 0; i < vk->mem.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (vk->mem.memoryTypes[i].propertyFlags & want) == want)
            return (int)i;
    return -1;
}

int td_vk_open(const char *want, td_vk **out, td_error *err)
{
    *out = NULL;
    const char *bw = getenv("TD_VULKAN_BARRIER");
    if (bw && *bw && strcmp(bw, "wide") != 0 && strcmp(bw, "narrow") != 0)
        return td_error_set(err, TD_EINVAL, "vulkan: TD_VULKAN_BARRIER=%s (narrow or wide)", bw);
    const char *im = getenv("TD_VULKAN_INPUT_MEM");
    if (im && *im && strcmp(im, "auto") != 0 && strcmp(im, "host") != 0)
        return td_error_set(err, TD_EINVAL, "vulkan: TD_VULKAN_INPUT_MEM=%s (auto or host)", im);
    const char *cmx = getenv("TD_VULKAN_COOPMAT");
    if (cmx && *cmx && strcmp(cmx, "auto") != 0 && strcmp(cmx, "nv") != 0 &&
        strcmp(cmx, "khr") != 0)
        return td_error_set(err, TD_EINVAL, "vulkan: TD_VULKAN_COOPMAT=%s (auto, nv or khr)", cmx);
    td_vk *vk = td_vk_calloc(1, sizeof *vk);
    if (!vk)
        return td_error_set(err, TD_ENOMEM, "vulkan: out of memory");
    vk->wide_barriers = bw && strcmp(bw, "wide") == 0;
    vk->input_host = im && strcmp(im, "host") == 0;
    int rc = instance_get(&vk->inst, err);
    if (rc)
        goto out_free;

    VkPhysicalDevice *pds;
    uint32_t n;
    rc = devices_get(vk->inst, &pds, &n, err);
    if (rc)
        goto out_inst;
    int pick = -1, pick_rank = -1;
    char seen[512] = "";
    size_t so = 0;
    for (uint32_t i = 0; i < n; i++) {
        pdev_facts f;
        rc = facts_read(pds[i], &f, err);
        if (rc) {
            td_vk_free(pds);
            goto out_inst;
        }
        if (so < sizeof seen - 1) /* else full: the list names the first devices */
            so += (size_t)snprintf(seen + so, sizeof seen - so, "%s%s [%s %s]%s%s",
                                   i ? ", " : "", f.info.name,
                                   f.info.pci[0] ? f.info.pci : "no PCI", f.info.uuid,
                                   f.info.usable ? "" : ": ", f.info.reason);
        if (want && *want) {
            if (device_matches(&f.info, want)) {
                if (!f.info.usable) {
                    td_vk_free(pds);
                    rc = td_error_set(err, TD_EUNAVAILABLE, "vulkan: %s (%s): unavailable: %s",
                                      want, f.info.name, f.info.reason);
                    goto out_inst;
                }
                pick = (int)i;
                vk->facts = f;
                break;
            }
            continue;
        }
        int rank = !f.info.usable ? -1
                   : f.info.device_type == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU ? 3
                   : f.info.device_type == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU ? 2
                   : 1;
        if (rank > pick_rank) {
            pick_rank = rank;
            pick = rank >= 0 ? (int)i : -1;
            if (pick >= 0)
                vk->facts = f;
        }
    }
    if (pick < 0) {
        td_vk_free(pds);
        rc = want && *want
                 ? td_error_set(err, TD_EUNAVAILABLE, "vulkan: no device %s (seen: %s)", want, seen)
                 : td_error_set(err, TD_EUNAVAILABLE, "vulkan: no usable device (seen: %s)", seen);
        goto out_inst;
    }
    vk->pd = pds[pick];
    td_vk_free(pds);
    /* one extension's matrix path: NV's where usable, else KHR's;
     * TD_VULKAN_COOPMAT=nv or khr takes that one alone */
    if (cmx && strcmp(cmx, "khr") == 0)
        vk->facts.nv_coopmat = 0;
    else if (vk->facts.nv_coopmat || (cmx && strcmp(cmx, "nv") == 0))
        vk->facts.info.coopmat_family = 0;
    vk->facts.info.has_coopmat_nv = vk->facts.nv_coopmat;
    if (!vk->facts.info.coopmat_family)
        vk->facts.khr_sg_control = 0;
    p_vkGetPhysicalDeviceMemoryProperties(vk->pd, &vk->mem);
    vk->facts.info.input_device_local =
        !vk->input_host && find_mem_type(vk, ~0u, INPUT_NEAR) >= 0;

    /* the device, with buffer device addresses (and the budget extension) */
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = (uint32_t)vk->facts.queue_family,
                                   .queueCount = 1,
                                   .pQueuePriorities = &prio};
    VkPhysicalDeviceCooperativeMatrixFeaturesNV fcm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
        .cooperativeMatrix = VK_TRUE};
    VkPhysicalDeviceVulkan12Features f12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                                            .bufferDeviceAddress = VK_TRUE};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f12};
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR fexe = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pipelineExecutableInfo = VK_TRUE};
    const char *exts[4];
    uint32_t n_exts = 0;
    if (vk->facts.has_budget_ext)
        exts[n_exts++] = VK_EXT_MEMORY_BUDGET_EXTENSION_NAME;
    khr_cm_features fkcm = {.sType = (VkStructureType)KHR_CM_FEATURES_STYPE,
                            .cooperativeMatrix = VK_TRUE};
    VkPhysicalDeviceVulkan13Features f13 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES,
                                            .subgroupSizeControl = VK_TRUE,
                                            .computeFullSubgroups = VK_TRUE};
    if (vk->facts.nv_coopmat) {
        exts[n_exts++] = VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME;
        f12.shaderFloat16 = VK_TRUE;
        f12.vulkanMemoryModel = VK_TRUE;
        f12.pNext = &fcm;
    } else if (vk->facts.info.coopmat_family) {
        exts[n_exts++] = VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME;
        f12.shaderFloat16 = VK_TRUE;
        f12.vulkanMemoryModel = VK_TRUE;
        f12.pNext = &fkcm;
        if (vk->facts.khr_sg_control) {
            f13.pNext = f12.pNext;
            f12.pNext = &f13;
        }
    }
    int want_stats = g_capture_stats && vk->facts.has_exec_props;
    if (want_stats) { /* chained first: fcm may already follow f12 */
        exts[n_exts++] = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
        fexe.pNext = f12.pNext;
        f12.pNext = &fexe;
    }
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                              .pNext = &f2,
                              .queueCreateInfoCount = 1,
                              .pQueueCreateInfos = &qci,
                              .enabledExtensionCount = n_exts,
                              .ppEnabledExtensionNames = exts};
    if (inject()) {
        rc = td_error_set(err, TD_ENOMEM, "vulkan: vkCreateDevice: out of host memory (injected)");
        goto out_inst;
    }
    VkResult r = p_vkCreateDevice(vk->pd, &dci, NULL, &vk->dev);
    if (r != VK_SUCCESS) {
        rc = VKFAIL(err, r, "vkCreateDevice");
        goto out_inst;
    }
    g_live++;
#define LOAD(fn) vk->f.fn = (PFN_##fn)p_vkGetDeviceProcAddr(vk->dev, #fn);
    DEVICE_FNS(LOAD)
#undef LOAD
#define CHECK(fn) if (!vk->f.fn) { rc = td_error_set(err, TD_EUNAVAILABLE, "vulkan: driver lacks " #fn); goto out_dev; }
    DEVICE_FNS(CHECK)
#undef CHECK
    vk->f.vkGetDeviceQueue(vk->dev, (uint32_t)vk->facts.queue_family, 0, &vk->queue);
    if (want_stats) { /* optional: without them pipelines just carry no statistics */
        vk->get_exec_props = (PFN_vkGetPipelineExecutablePropertiesKHR)p_vkGetDeviceProcAddr(
            vk->dev, "vkGetPipelineExecutablePropertiesKHR");
        vk->get_exec_stats = (PFN_vkGetPipelineExecutableStatisticsKHR)p_vkGetDeviceProcAddr(
            vk->dev, "vkGetPipelineExecutableStatisticsKHR");
    }

    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = (uint32_t)vk->facts.queue_family};
    if (inject()) {
        rc = td_error_set(err, TD_ENOMEM, "vulkan: vkCreateCommandPool: out of memory (injected)");
        goto out_dev;
    }
    r = vk->f.vkCreateCommandPool(vk->dev, &pci, NULL, &vk->pool);
    if (r != VK_SUCCESS) {
        rc = VKFAIL(err, r, "vkCreateCommandPool");
        goto out_dev;
    }
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = vk->pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 1};
    r = vk->f.vkAllocateCommandBuffers(vk->dev, &cai, &vk->cmd0);
    if (r != VK_SUCCESS) {
        rc = VKFAIL(err, r, "vkAllocateCommandBuffers");
        goto out_pool;
    }
    vk->cmd = vk->cmd0;
    vk->cur_kept = -1;
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (inject()) {
        rc = td_error_set(err, TD_ENOMEM, "vulkan: vkCreateFence: out of memory (injected)");
        goto out_pool;
    }
    r = vk->f.vkCreateFence(vk->dev, &fci, NULL, &vk->fence);
    if (r != VK_SUCCESS) {
        rc = VKFAIL(err, r, "vkCreateFence");
        goto out_pool;
    }
    if (vk->facts.ts_bits > 0) {
        VkQueryPoolCreateInfo qpi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                     .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                     .queryCount = MAX_QUERIES};
        if (inject()) {
            rc = td_error_set(err, TD_ENOMEM, "vulkan: vkCreateQueryPool: out of memory (injected)");
            goto out_fence;
        }
        r = vk->f.vkCreateQueryPool(vk->dev, &qpi, NULL, &vk->qpool);
        if (r != VK_SUCCESS) {
            rc = VKFAIL(err, r, "vkCreateQueryPool");
            goto out_fence;
        }
    }
    rc = td_vk_buf_create(vk, STAGING_BYTES, TD_VK_MEM_HOST, &vk->staging, err);
    if (rc)
        goto out_query;
    *out = vk;
    return TD_OK;

out_query:
    if (vk->qpool)
        vk->f.vkDestroyQueryPool(vk->dev, vk->qpool, NULL);
out_fence:
    vk->f.vkDestroyFence(vk->dev, vk->fence, NULL);
out_pool:
    vk->f.vkDestroyCommandPool(vk->dev, vk->pool, NULL);
out_dev:
    vk->f.vkDestroyDevice(vk->dev, NULL);
    g_live--;
out_inst:
    instance_put(vk->inst);
out_free:
    td_vk_free(vk);
    return rc;
}

void td_vk_close(td_vk *vk)
{
    if (!vk)
        return;
    /* after a submission that never finished, its buffers may be in use:
     * wait for the device (a lost one answers at once); the result does
     * not matter, only that nothing runs any more */
    if (vk->broken)
        (void)vk->f.vkDeviceWaitIdle(vk->dev);
    td_vk_buf_destroy(vk, &vk->staging);
    if (vk->qpool)
        vk->f.vkDestroyQueryPool(vk->dev, vk->qpool, NULL);
    vk->f.vkDestroyFence(vk->dev, vk->fence, NULL);
    vk->f.vkDestroyCommandPool(vk->dev, vk->pool, NULL);
    vk->f.vkDestroyDevice(vk->dev, NULL);
    g_live--;
    instance_put(vk->inst);
    td_vk_free(vk);
}

/* ------------------------------------------------------------------ */
/* Buffers                                                              */

int td_vk_buf_create(td_vk *vk, uint64_t size, enum td_vk_mem kind, td_vk_buf *b, td_error *err)
{
    memset(b, 0, sizeof *b);
    if (size == 0)
        size = 4;
    if (vk->facts.max_alloc && size > vk->facts.max_alloc)
        return td_error_set(err, TD_ENOMEM,
                            "vulkan: a buffer of %llu bytes is over the device's %llu per allocation",
                            (unsigned long long)size, (unsigned long long)vk->facts.max_alloc);
    /* host-visible per-call inputs may hold an indirect dispatch's size
     * (td_vk_dispatch_indirect): the host writes it before the submit */
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                              .size = size,
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                                       VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT |
                                       (kind == TD_VK_MEM_HOST || kind == TD_VK_MEM_INPUT
                                            ? VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT
                                            : 0),
                              .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    if (inject())
        return td_error_set(err, TD_ENOMEM, "vulkan: vkCreateBuffer: out of memory (injected)");
    VkResult r = vk->f.vkCreateBuffer(vk->dev, &bci, NULL, &b->buf);
    if (r != VK_SUCCESS)
        return VKFAIL(err, r, "vkCreateBuffer");
    g_live++;
    VkMemoryRequirements req;
    vk->f.vkGetBufferMemoryRequirements(vk->dev, b->buf, &req);
    int type = -1;
    switch (kind) {
    case TD_VK_MEM_DEVICE:
        type = find_mem_type(vk, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
        if (type < 0)
            type = find_mem_type(vk, req.memoryTypeBits, 0);
        break;
    case TD_VK_MEM_INPUT:
    case TD_VK_MEM_HOST:
        if (kind == TD_VK_MEM_INPUT && !vk->input_host)
            type = find_mem_type(vk, req.memoryTypeBits, INPUT_NEAR);
        if (type < 0) /* host memory */
            type = find_mem_type(vk, req.memoryTypeBits, HOST_MEM);
        break;
    case TD_VK_MEM_READBACK:
        type = find_mem_type(vk, req.memoryTypeBits, HOST_MEM | VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
        if (type < 0)
            type = find_mem_type(vk, req.memoryTypeBits, HOST_MEM);
        break;
    }
    int rc;
    if (type < 0) {
        rc = td_error_set(err, TD_EUNAVAILABLE, "vulkan: no memory type for a buffer of kind %d",
                          (int)kind);
        goto out_buf;
    }
    VkMemoryAllocateFlagsInfo fl = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
                                    .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT};
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                .pNext = &fl,
                                .allocationSize = req.size,
                                .memoryTypeIndex = (uint32_t)type};
    if (inject()) {
        rc = td_error_set(err, TD_ENOMEM, "vulkan: vkAllocateMemory: out of device memory (injected)");
        goto out_buf;
    }
    r = vk->f.vkAllocateMemory(vk->dev, &mai, NULL, &b->mem);
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY && kind == TD_VK_MEM_INPUT &&
        (vk->mem.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT)) {
        /* the mapped part of the card's memory is full (a BAR of 256 MiB
         * without resizable BAR): host memory, as where there is none */
        int host = find_mem_type(vk, req.memoryTypeBits, HOST_MEM);
        if (host >= 0 && host != type &&
            !(vk->mem.memoryTypes[host].propertyFlags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT)) {
            type = host;
            mai.memoryTypeIndex = (uint32_t)type;
            r = vk->f.vkAllocateMemory(vk->dev, &mai, NULL, &b->mem);
        }
    }
    if (r != VK_SUCCESS) {
        rc = td_error_set(err, vk_rc(r), "vulkan: allocating %llu bytes: %s",
                          (unsigned long long)req.size, vk_str(r));
        b->mem = VK_NULL_HANDLE;
        goto out_buf;
    }
    g_live++;
    b->device_local =
        (vk->mem.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) != 0;
    r = vk->f.vkBindBufferMemory(vk->dev, b->buf, b->mem, 0);
    if (r != VK_SUCCESS) {
        rc = VKFAIL(err, r, "vkBindBufferMemory");
        goto out_mem;
    }
    if (kind != TD_VK_MEM_DEVICE) {
        r = vk->f.vkMapMemory(vk->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map);
        if (r != VK_SUCCESS) {
            rc = VKFAIL(err, r, "vkMapMemory");
            goto out_mem;
        }
    }
    VkBufferDeviceAddressInfo ai = {.sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO,
                                    .buffer = b->buf};
    b->addr = vk->f.vkGetBufferDeviceAddress(vk->dev, &ai);
    b->size = size;
    return TD_OK;

out_mem:
    vk->f.vkFreeMemory(vk->dev, b->mem, NULL);
    g_live--;
out_buf:
    vk->f.vkDestroyBuffer(vk->dev, b->buf, NULL);
    g_live--;
    memset(b, 0, sizeof *b);
    return rc;
}

void td_vk_buf_destroy(td_vk *vk, td_vk_buf *b)
{
    if (!b || !b->buf)
        return;
    vk->f.vkDestroyBuffer(vk->dev, b->buf, NULL);
    g_live--;
    if (b->mem) {
        if (b->map)
            vk->f.vkUnmapMemory(vk->dev, b->mem);
        vk->f.vkFreeMemory(vk->dev, b->mem, NULL);
        g_live--;
    }
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------ */
/* Recording                                                            */

/* Start recording into vk->cmd (reset first). */
static int refuse_broken(td_error *err)
{
    return td_error_set(err, TD_EENGINE,
                        "vulkan: the device lost a submission or never finished one earlier; "
                        "it takes no more work (close and open it again)");
}

static int begin_cmd(td_vk *vk, VkCommandBufferUsageFlags flags, td_error *err)
{
    if (vk->broken)
        return refuse_broken(err);
    VkResult r = vk->f.vkResetCommandBuffer(vk->cmd, 0);
    if (r != VK_SUCCESS)
        return VKFAIL(err, r, "vkResetCommandBuffer");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = flags};
    r = vk->f.vkBeginCommandBuffer(vk->cmd, &bi);
    if (r != VK_SUCCESS)
        return VKFAIL(err, r, "vkBeginCommandBuffer");
    return TD_OK;
}

int td_vk_begin(td_vk *vk, td_error *err)
{
    if (vk->recording)
        return td_error_set(err, TD_EINVAL, "vulkan: begin while recording");
    if (vk->later && (vk->later == vk->cmd0 || vk->profiling)) {
        /* the one-time buffer is the one waiting (or timestamps are
         * reset below): it runs first */
        int rc = td_vk_flush(vk, err);
        if (rc)
            return rc;
    }
    vk->cmd = vk->cmd0;
    vk->cur_kept = -1;
    vk->replaying = 0;
    int rc = begin_cmd(vk, VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT, err);
    if (rc)
        return rc;
    vk->recording = 1;
    vk->pending = 0;
    vk->transfer_pending = 0;
    vk->concurrent = 0;
    vk->n_queries = 0;
    if (vk->profiling && vk->qpool)
        vk->f.vkCmdResetQueryPool(vk->cmd, vk->qpool, 0, MAX_QUERIES);
    return TD_OK;
}

int td_vk_begin_cached(td_vk *vk, uint64_t key, int *replay, td_error *err)
{
    *replay = 0;
    if (vk->recording)
        return td_error_set(err, TD_EINVAL, "vulkan: begin while recording");
    if (vk->later) { /* it may be the kept buffer asked for */
        int rc = td_vk_flush(vk, err);
        if (rc)
            return rc;
    }
    if (vk->profiling)
        return td_vk_begin(vk, err); /* timestamps are per recording */
    int slot = -1;
    for (int i = 0; i < MAX_KEPT; i++)
        if (vk->kept[i].valid && vk->kept[i].key == key) {
            slot = i;
            break;
        }
    if (slot >= 0) {
        vk->kept[slot].used = ++vk->uses;
        vk->cmd = vk->kept[slot].cmd;
        vk->cur_kept = slot;
        vk->replaying = 1;
        vk->recording = 1;
        vk->n_queries = 0; /* a kept recording has no timestamps */
        *replay = 1;
        return TD_OK;
    }
    /* a free slot, else the least recently used */
    for (int i = 0; i < MAX_KEPT; i++)
        if (slot < 0 || !vk->kept[i].valid ||
            (vk->kept[slot].valid && vk->kept[i].used < vk->kept[slot].used))
            slot = i;
    if (!vk->kept[slot].cmd) {
        VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                           .commandPool = vk->pool,
                                           .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                           .commandBufferCount = 1};
        VkResult r = vk->f.vkAllocateCommandBuffers(vk->dev, &cai, &vk->kept[slot].cmd);
        if (r != VK_SUCCESS) {
            vk->kept[slot].cmd = VK_NULL_HANDLE;
            return VKFAIL(err, r, "vkAllocateCommandBuffers");
        }
    }
    vk->kept[slot].valid = 0;
    vk->kept[slot].key = key;
    vk->kept[slot].used = ++vk->uses;
    vk->cmd = vk->kept[slot].cmd;
    vk->cur_kept = slot;
    vk->replaying = 0;
    int rc = begin_cmd(vk, 0, err);
    if (rc) {
        vk->cmd = vk->cmd0;
        vk->cur_kept = -1;
        return rc;
    }
    vk->recording = 1;
    vk->pending = 0;
    vk->transfer_pending = 0;
    vk->concurrent = 0;
    vk->n_queries = 0;
    return TD_OK;
}

void td_vk_forget(td_vk *vk)
{
    for (int i = 0; i < MAX_KEPT; i++)
        vk->kept[i].valid = 0;
    vk->later_kept = -1; /* a pending one is not replayed after it ran */
}

/* What was recorded before waits for what comes next (transfer: a copy or
 * fill). Between dispatches with no copy or fill since the last barrier,
 * the barrier names the compute stage alone: every command since then is
 * a dispatch, and what came before that barrier was made visible to
 * compute by it (a barrier around a copy or fill names both stages). A
 * decode step is about 200 dispatches each waiting on the one before;
 * on an H100 a batch-1 step took 2.36 ms so against 2.62 with both
 * stages named everywhere (TD_VULKAN_BARRIER=wide, as before). */
static void barrier(td_vk *vk, int transfer_next)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                           VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT};
    VkPipelineStageFlags st = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    if (!transfer_next && !vk->transfer_pending && !vk->wide_barriers) {
        mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
        mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
        st = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
    }
    vk->f.vkCmdPipelineBarrier(vk->cmd, st, st, 0, 1, &mb, 0, NULL, 0, NULL);
    vk->pending = 0;
    vk->transfer_pending = 0;
}

void td_vk_concurrent(td_vk *vk, int on)
{
    vk->concurrent = on;
}

int td_vk_concurrent_get(const td_vk *vk)
{
    return vk->concurrent;
}

static int prof_index(td_vk *vk, td_vk_pipe *p)
{
    if (p->prof >= 0 && p->prof < vk->n_prof && vk->prof[p->prof].name == p->name)
        return p->prof;
    for (int i = 0; i < vk->n_prof; i++)
        if (vk->prof[i].name == p->name)
            return p->prof = i;
    if (vk->n_prof >= MAX_PROF)
        return -1;
    vk->prof[vk->n_prof] = (td_vk_prof){p->name, 0, 0, p->stats};
    return p->prof = vk->n_prof++;
}

/* A dispatch of gx x gy x gz workgroups, or (ib not NULL) of the size
 * at ib + ioff when the command buffer runs. */
static void dispatch(td_vk *vk, td_vk_pipe *p, const void *push, uint32_t gx, uint32_t gy,
                     uint32_t gz, const td_vk_buf *ib, uint64_t ioff)
{
    if (vk->replaying)
        return;
    if (vk->pending && !vk->concurrent)
        barrier(vk, 0);
    int timed = vk->profiling && vk->qpool && vk->n_queries + 2 <= MAX_QUERIES;
    if (timed)
        vk->f.vkCmdWriteTimestamp(vk->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, vk->qpool,
                                  (uint32_t)vk->n_queries);
    vk->f.vkCmdBindPipeline(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipe);
    if (p->push_bytes)
        vk->f.vkCmdPushConstants(vk->cmd, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, p->push_bytes,
                                 push);
    if (ib)
        vk->f.vkCmdDispatchIndirect(vk->cmd, ib->buf, ioff);
    else
        vk->f.vkCmdDispatch(vk->cmd, gx, gy, gz);
    if (timed) {
        vk->f.vkCmdWriteTimestamp(vk->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, vk->qpool,
                                  (uint32_t)vk->n_queries + 1);
        vk->query_pipe[vk->n_queries / 2] = prof_index(vk, p);
        vk->query_groups[vk->n_queries / 2] = ib ? 0 : gx * gy * gz;
        vk->n_queries += 2;
    }
    vk->pending = 1;
}

void td_vk_dispatch(td_vk *vk, td_vk_pipe *p, const void *push, uint32_t gx, uint32_t gy,
                    uint32_t gz)
{
    dispatch(vk, p, push, gx, gy, gz, NULL, 0);
}

void td_vk_dispatch_indirect(td_vk *vk, td_vk_pipe *p, const void *push, const td_vk_buf *args,
                             uint64_t off)
{
    dispatch(vk, p, push, 0, 0, 0, args, off);
}

void td_vk_copy(td_vk *vk, const td_vk_buf *src, uint64_t src_off, const td_vk_buf *dst,
                uint64_t dst_off, uint64_t n)
{
    if (vk->replaying)
        return;
    if (vk->pending && !vk->concurrent)
        barrier(vk, 1);
    VkBufferCopy c = {.srcOffset = src_off, .dstOffset = dst_off, .size = n};
    vk->f.vkCmdCopyBuffer(vk->cmd, src->buf, dst->buf, 1, &c);
    vk->pending = 1;
    vk->transfer_pending = 1;
}

void td_vk_update(td_vk *vk, const td_vk_buf *dst, uint64_t off, const void *data, uint64_t n)
{
    if (vk->replaying)
        return;
    if (vk->pending && !vk->concurrent)
        barrier(vk, 1);
    vk->f.vkCmdUpdateBuffer(vk->cmd, dst->buf, off, n, data);
    vk->pending = 1;
    vk->transfer_pending = 1;
}

/* End the recording: the barrier that makes everything written visible
 * to the host and to what follows, then vkEndCommandBuffer (a replayed
 * buffer is ended already). *cmd and *kept: what to submit. */
static int end_recording(td_vk *vk, VkCommandBuffer *cmd_out, int *kept_out, td_error *err)
{
    if (!vk->recording)
        return td_error_set(err, TD_EINVAL, "vulkan: submit without begin");
    int kept = vk->cur_kept, replay = vk->replaying;
    VkCommandBuffer cmd = vk->cmd;
    vk->cmd = vk->cmd0;
    vk->cur_kept = -1;
    vk->replaying = 0;
    vk->recording = 0;
    if (kept >= 0)
        vk->kept[kept].valid = 0; /* until it has run through */
    if (!replay && vk->pending) {
        /* everything written is visible to the host after the fence, and
         * to the next command buffer */
        VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                              .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                              .dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT |
                                               VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                                               VK_ACCESS_TRANSFER_WRITE_BIT};
        vk->f.vkCmdPipelineBarrier(cmd,
                                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                                   VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT |
                                       VK_PIPELINE_STAGE_TRANSFER_BIT,
                                   0, 1, &mb, 0, NULL, 0, NULL);
        vk->pending = 0;
    }
    if (!replay) {
        VkResult r = vk->f.vkEndCommandBuffer(cmd);
        if (r != VK_SUCCESS)
            return VKFAIL(err, r, "vkEndCommandBuffer");
    }
    *cmd_out = cmd;
    *kept_out = kept;
    return TD_OK;
}

/* Submit the buffer kept for later (if any) and cmd (if any) together,
 * and wait for them. */
static int submit_both(td_vk *vk, VkCommandBuffer cmd, int kept, td_error *err)
{
    VkCommandBuffer cmds[2];
    int later_kept = vk->later ? vk->later_kept : -1;
    /* the timestamps this submission's recording wrote: read below once it
     * ran, and forgotten whatever happens, so that a failed submission's
     * count is never taken for a later (replayed) one's */
    int n_queries = vk->n_queries;
    vk->n_queries = 0;
    uint32_t n = 0;
    if (vk->later)
        cmds[n++] = vk->later;
    if (cmd)
        cmds[n++] = cmd;
    vk->later = VK_NULL_HANDLE;
    vk->later_kept = -1;
    if (n == 0)
        return TD_OK;
    if (vk->broken)
        return refuse_broken(err);
    VkResult r = vk->f.vkResetFences(vk->dev, 1, &vk->fence);
    if (r != VK_SUCCESS)
        return VKFAIL(err, r, "vkResetFences");
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                       .commandBufferCount = n,
                       .pCommandBuffers = cmds};
    /* an injected failure is what a driver that cannot find the memory
     * for the work returns (vkQueueSubmit may: out of device memory) */
    r = count_down(&g_fail_submit) ? VK_ERROR_OUT_OF_DEVICE_MEMORY
                                   : vk->f.vkQueueSubmit(vk->queue, 1, &si, vk->fence);
    if (r != VK_SUCCESS) {
        vk->broken = r == VK_ERROR_DEVICE_LOST;
        return VKFAIL(err, r, "vkQueueSubmit");
    }
    /* an injected time-out is what a hung submission gives (after the
     * real wait, so the work has ended when a test closes the device) */
    uint64_t wait_ns =
        vk->facts.info.device_type == VK_PHYSICAL_DEVICE_TYPE_CPU ? WAIT_CPU_NS : WAIT_NS;
    r = vk->f.vkWaitForFences(vk->dev, 1, &vk->fence, VK_TRUE, wait_ns);
    if (r == VK_SUCCESS && count_down(&g_fail_wait))
        r = VK_TIMEOUT;
    if (r != VK_SUCCESS) {
        vk->broken = 1; /* VK_TIMEOUT: still running; anything else: lost */
        if (r == VK_TIMEOUT)
            return td_error_set(err, TD_EENGINE, "vulkan: a submission did not finish in %d s",
                                (int)(wait_ns / 1000000000ull));
        return VKFAIL(err, r, "vkWaitForFences");
    }
    if (kept >= 0)
        vk->kept[kept].valid = 1;
    if (later_kept >= 0)
        vk->kept[later_kept].valid = 1;
    if (n_queries > 0) {
        uint64_t ts[MAX_QUERIES];
        r = vk->f.vkGetQueryPoolResults(vk->dev, vk->qpool, 0, (uint32_t)n_queries,
                                        sizeof ts, ts, sizeof ts[0],
                                        VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (r != VK_SUCCESS)
            return VKFAIL(err, r, "vkGetQueryPoolResults");
        uint64_t mask = vk->facts.ts_bits >= 64 ? ~0ull : (1ull << vk->facts.ts_bits) - 1;
        for (int q = 0; q + 1 < n_queries; q += 2) {
            int i = vk->query_pipe[q / 2];
            if (i < 0)
                continue;
            uint64_t d = (ts[q + 1] - ts[q]) & mask;
            double ms = (double)d * vk->facts.ts_period * 1e-6;
            vk->prof[i].ms += ms;
            vk->prof[i].count++;
            vk->last[vk->n_last++ % TD_VK_PROFILE_LAST] =
                (td_vk_disp){vk->prof[i].name, ms * 1e3, vk->query_groups[q / 2]};
        }
    }
    return TD_OK;
}

/* submit_both, counting a failure that took a kept recording with it
 * (td_vk_later_lost): its work is lost with the submission. */
static int run_and_wait(td_vk *vk, VkCommandBuffer cmd, int kept, td_error *err)
{
    int had_later = vk->later != VK_NULL_HANDLE;
    td_error e = {0};
    int rc = submit_both(vk, cmd, kept, &e);
    if (rc && had_later) {
        vk->later_lost++;
        vk->later_err = e;
    }
    if (rc && err)
        *err = e;
    return rc;
}

unsigned long td_vk_later_lost(const td_vk *vk, td_error *last)
{
    if (last && vk->later_lost)
        *last = vk->later_err;
    return vk->later_lost;
}

int td_vk_submit(td_vk *vk, td_error *err)
{
    VkCommandBuffer cmd;
    int kept;
    int rc = end_recording(vk, &cmd, &kept, err);
    if (rc)
        return rc;
    return run_and_wait(vk, cmd, kept, err);
}

int td_vk_submit_later(td_vk *vk, td_error *err)
{
    if (vk->later || vk->profiling || vk->n_queries > 0)
        return td_vk_submit(vk, err); /* one waits at most; timestamps now */
    VkCommandBuffer cmd;
    int kept;
    int rc = end_recording(vk, &cmd, &kept, err);
    if (rc)
        return rc;
    vk->later = cmd;
    vk->later_kept = kept;
    return TD_OK;
}

int td_vk_flush(td_vk *vk, td_error *err)
{
    if (vk->recording)
        return td_error_set(err, TD_EINVAL, "vulkan: flush while recording");
    return run_and_wait(vk, VK_NULL_HANDLE, -1, err);
}

void td_vk_profile(td_vk *vk, int on)
{
    vk->profiling = on;
}

int td_vk_profile_last(const td_vk *vk, td_vk_disp *out, int max)
{
    uint64_t size = TD_VK_PROFILE_LAST, n = vk->n_last < size ? vk->n_last : size;
    if (max < 0)
        max = 0;
    if (n > (uint64_t)max)
        n = (uint64_t)max;
    for (uint64_t i = 0; i < n; i++)
        out[i] = vk->last[(vk->n_last - n + i) % size];
    return (int)n;
}

uint64_t td_vk_profile_count(const td_vk *vk)
{
    return vk->n_last;
}

int td_vk_profile_read(td_vk *vk, td_vk_prof *out, int max, int reset)
{
    int n = vk->n_prof < max ? vk->n_prof : max;
    td_vk_prof tmp[MAX_PROF];
    memcpy(tmp, vk->prof, (size_t)vk->n_prof * sizeof tmp[0]);
    /* largest first (a few dozen entries: insertion sort) */
    for (int i = 1; i < vk->n_prof; i++)
        for (int j = i; j > 0 && tmp[j].ms > tmp[j - 1].ms; j--) {
            td_vk_prof t = tmp[j];
            tmp[j] = tmp[j - 1];
            tmp[j - 1] = t;
        }
    memcpy(out, tmp, (size_t)n * sizeof out[0]);
    if (reset)
        for (int i = 0; i < vk->n_prof; i++) {
            vk->prof[i].ms = 0;
            vk->prof[i].count = 0;
        }
    return n;
}

/* ------------------------------------------------------------------ */
/* Transfers through the staging buffer                                 */

int td_vk_upload(td_vk *vk, const td_vk_buf *dst, uint64_t off, const void *src, uint64_t n,
                 td_error *err)
{
    int frc = td_vk_flush(vk, err); /* the staging buffer may be what it reads */
    if (frc)
        return frc;
    if (off + n > dst->size)
        return td_error_set(err, TD_EINVAL, "vulkan: upload past a buffer's end");
    const unsigned char *s = src;
    while (n > 0) {
        uint64_t c = n < STAGING_BYTES ? n : STAGING_BYTES;
        memcpy(vk->staging.map, s, c);
        int rc = td_vk_begin(vk, err);
        if (rc)
            return rc;
        td_vk_copy(vk, &vk->staging, 0, dst, off, c);
        rc = td_vk_submit(vk, err);
        if (rc)
            return rc;
        s += c;
        off += c;
        n -= c;
    }
    return TD_OK;
}

int td_vk_download(td_vk *vk, const td_vk_buf *src, uint64_t off, void *dst, uint64_t n,
                   td_error *err)
{
    int frc = td_vk_flush(vk, err); /* the staging buffer may be what it reads */
    if (frc)
        return frc;
    if (off + n > src->size)
        return td_error_set(err, TD_EINVAL, "vulkan: download past a buffer's end");
    unsigned char *d = dst;
    while (n > 0) {
        uint64_t c = n < STAGING_BYTES ? n : STAGING_BYTES;
        int rc = td_vk_begin(vk, err);
        if (rc)
            return rc;
        td_vk_copy(vk, src, off, &vk->staging, 0, c);
        rc = td_vk_submit(vk, err);
        if (rc)
            return rc;
        memcpy(d, vk->staging.map, c);
        d += c;
        off += c;
        n -= c;
    }
    return TD_OK;
}

void td_vk_zero(td_vk *vk, const td_vk_buf *dst, uint64_t off, uint64_t n)
{
    if (vk->replaying)
        return;
    if (vk->pending && !vk->concurrent)
        barrier(vk, 1);
    vk->f.vkCmdFillBuffer(vk->cmd, dst->buf, off, n, 0);
    vk->pending = 1;
    vk->transfer_pending = 1;
}

int td_vk_fill0(td_vk *vk, const td_vk_buf *dst, uint64_t off, uint64_t n, td_error *err)
{
    int rc = td_vk_begin(vk, err);
    if (rc)
        return rc;
    vk->f.vkCmdFillBuffer(vk->cmd, dst->buf, off, n, 0);
    vk->pending = 1;
    vk->transfer_pending = 1;
    return td_vk_submit(vk, err);
}

/* ------------------------------------------------------------------ */
/* Pipelines                                                            */

/* p->stats = the driver's statistics of p's first executable as
 * "name value, ..." (registers, shared memory, spills: whatever the
 * driver reports); left "" where the driver answers nothing. */
static void stats_read(td_vk *vk, td_vk_pipe *p)
{
    VkPipelineInfoKHR pi = {.sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, .pipeline = p->pipe};
    uint32_t n_exe = 0;
    if (vk->get_exec_props(vk->dev, &pi, &n_exe, NULL) != VK_SUCCESS || n_exe == 0)
        return;
    VkPipelineExecutableInfoKHR ei = {.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR,
                                      .pipeline = p->pipe,
                                      .executableIndex = 0};
    VkPipelineExecutableStatisticKHR st[16];
    uint32_t n = 16;
    for (uint32_t i = 0; i < n; i++)
        st[i] = (VkPipelineExecutableStatisticKHR){
            .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR};
    VkResult r = vk->get_exec_stats(vk->dev, &ei, &n, st);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE)
        return;
    size_t o = 0;
    for (uint32_t i = 0; i < n && o < sizeof p->stats; i++) {
        const char *sep = o ? ", " : "";
        size_t room = sizeof p->stats - o;
        int w;
        switch (st[i].format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
            w = snprintf(p->stats + o, room, "%s%s %s", sep, st[i].name, st[i].value.b32 ? "yes" : "no");
            break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
            w = snprintf(p->stats + o, room, "%s%s %lld", sep, st[i].name, (long long)st[i].value.i64);
            break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
            w = snprintf(p->stats + o, room, "%s%s %llu", sep, st[i].name,
                         (unsigned long long)st[i].value.u64);
            break;
        default:
            w = snprintf(p->stats + o, room, "%s%s %g", sep, st[i].name, st[i].value.f64);
            break;
        }
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

static int pipe_create(td_vk *vk, const char *name, const uint32_t *spv, size_t n_words,
                       uint32_t push_bytes, const uint32_t *spec, int n_spec, uint32_t req_sg,
                       td_vk_pipe **out, td_error *err);

int td_vk_pipe_create(td_vk *vk, const char *name, const uint32_t *spv, size_t n_words,
                      uint32_t push_bytes, const uint32_t *spec, int n_spec, td_vk_pipe **out,
                      td_error *err)
{
    return pipe_create(vk, name, spv, n_words, push_bytes, spec, n_spec, 0, out, err);
}

int td_vk_pipe_create_khr_cm(td_vk *vk, const char *name, const uint32_t *spv, size_t n_words,
                             uint32_t push_bytes, td_vk_pipe **out, td_error *err)
{
    uint32_t sg = 0;
    for (size_t f = 0; f < sizeof khr_families / sizeof khr_families[0]; f++)
        if (khr_families[f].family == vk->facts.info.coopmat_family)
            sg = khr_families[f].sg;
    if (!sg || !n_words) {
        *out = NULL;
        return td_error_set(err, TD_EUNAVAILABLE, "vulkan: %s: %s", name,
                            !sg ? "no KHR cooperative-matrix family on this device"
                                : "not built (no compiler for GL_KHR_cooperative_matrix)");
    }
    return pipe_create(vk, name, spv, n_words, push_bytes, NULL, 0,
                       vk->facts.khr_sg_control ? sg : 0, out, err);
}

static int pipe_create(td_vk *vk, const char *name, const uint32_t *spv, size_t n_words,
                       uint32_t push_bytes, const uint32_t *spec, int n_spec, uint32_t req_sg,
                       td_vk_pipe **out, td_error *err)
{
    *out = NULL;
    if (push_bytes > vk->facts.max_push)
        return td_error_set(err, TD_EUNAVAILABLE, "vulkan: %s needs %u bytes of push constants",
                            name, push_bytes);
    td_vk_pipe *p = td_vk_calloc(1, sizeof *p);
    if (!p)
        return td_error_set(err, TD_ENOMEM, "vulkan: out of memory");
    snprintf(p->name, sizeof p->name, "%s", name);
    p->push_bytes = push_bytes;
    p->prof = -1;
    int rc;
    VkShaderModuleCreateInfo smi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                    .codeSize = n_words * 4,
                                    .pCode = spv};
    VkShaderModule sm;
    if (inject()) {
        rc = td_error_set(err, TD_ENOMEM, "vulkan: vkCreateShaderModule: out of memory (injected)");
        goto out_free;
    }
    VkResult r = vk->f.vkCreateShaderModule(vk->dev, &smi, NULL, &sm);
    if (r != VK_SUCCESS) {
        rc = VKFAIL(err, r, "vkCreateShaderModule");
        goto out_free;
    }
    VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = push_bytes};
    VkPipelineLayoutCreateInfo pli = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                      .pushConstantRangeCount = push_bytes ? 1 : 0,
                                      .pPushConstantRanges = &pr};
    r = vk->f.vkCreatePipelineLayout(vk->dev, &pli, NULL, &p->layout);
    if (r != VK_SUCCESS) {
        rc = VKFAIL(err, r, "vkCreatePipelineLayout");
        goto out_sm;
    }
    VkSpecializationMapEntry me[16];
    if (n_spec > 16)
        n_spec = 16;
    for (int i = 0; i < n_spec; i++)
        me[i] = (VkSpecializationMapEntry){(uint32_t)i, (uint32_t)i * 4, 4};
    VkSpecializationInfo si = {(uint32_t)n_spec, me, (size_t)n_spec * 4, spec};
    VkComputePipelineCreateInfo cpi = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = sm,
                  .pName = "main",
                  .pSpecializationInfo = n_spec ? &si : NULL},
        .layout = p->layout,
    };
    /* a KHR cooperative-matrix family's subgroup size, where the
     * device's default is another (td_vk_pipe_create_khr_cm) */
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfo rsg = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO,
        .requiredSubgroupSize = req_sg};
    if (req_sg) {
        cpi.stage.pNext = &rsg;
        cpi.stage.flags |= VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT;
    }
    int stats = vk->get_exec_props && vk->get_exec_stats;
    if (stats)
        cpi.flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
    r = vk->f.vkCreateComputePipelines(vk->dev, VK_NULL_HANDLE, 1, &cpi, NULL, &p->pipe);
    if (r != VK_SUCCESS) {
        rc = td_error_set(err, vk_rc(r), "vulkan: pipeline %s: %s", name, vk_str(r));
        goto out_layout;
    }
    vk->f.vkDestroyShaderModule(vk->dev, sm, NULL);
    if (stats)
        stats_read(vk, p);
    g_live++;
    *out = p;
    return TD_OK;

out_layout:
    vk->f.vkDestroyPipelineLayout(vk->dev, p->layout, NULL);
out_sm:
    vk->f.vkDestroyShaderModule(vk->dev, sm, NULL);
out_free:
    td_vk_free(p);
    return rc;
}

void td_vk_pipe_destroy(td_vk *vk, td_vk_pipe *p)
{
    if (!p)
        return;
    vk->f.vkDestroyPipeline(vk->dev, p->pipe, NULL);
    vk->f.vkDestroyPipelineLayout(vk->dev, p->layout, NULL);
    g_live--;
    td_vk_free(p);
}

/* ------------------------------------------------------------------ */
/* The probe child's answer (probe.h)                                   */

static size_t put_hex(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++, n += 2)
        if (n + 2 < cap)
            snprintf(out + n, 3, "%02x", *c);
    if (n == 0 && cap > 1)
        snprintf(out, cap, "-");
    return n ? n : 1;
}

size_t td_vulkan_probe_text(char *out, size_t cap)
{
    td_vk_info info[16];
    int n = 0;
    td_error err = {0};
    size_t need = 0;
    char line[1024];
    if (td_vk_list(info, 16, &n, &err) != TD_OK) {
        need = (size_t)snprintf(out, cap, "note vulkan: %s\n", err.msg);
        return need;
    }
    if (cap)
        out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const td_vk_info *d = &info[i];
        char name[2 * sizeof d->name + 2], why[2 * sizeof d->reason + 2];
        char matrix[96], mhex[2 * sizeof matrix + 2];
        put_hex(name, sizeof name, d->name);
        put_hex(why, sizeof why, d->usable ? "" : d->reason);
        td_vk_matrix_note(d, matrix, sizeof matrix);
        put_hex(mhex, sizeof mhex, d->usable ? matrix : "");
        int len = snprintf(line, sizeof line, "vk %s %s %lld %lld %04x %d %d %s %s %s\n",
                           d->pci[0] ? d->pci : "-", d->uuid[0] ? d->uuid : "-",
                           (long long)d->local_bytes, (long long)d->free_bytes, d->vendor_id,
                           d->device_type, d->usable, name, why, mhex);
        if (len <= 0)
            continue;
        if (need < cap)
            snprintf(out + need, cap - need, "%s", line);
        need += (size_t)len;
    }
    if (n == 0) {
        int len = snprintf(line, sizeof line, "note vulkan: the loader lists no device\n");
        if (need < cap)
            snprintf(out + need, cap - need, "%s", line);
        need += (size_t)len;
    }
    return need;
}
