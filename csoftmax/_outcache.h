/* The memory behind csoftmax's large allocated outputs: NumPy's data
 * allocator (a PyDataMem_Handler, NEP 49) with a small cache of freed blocks.
 *
 * Why: an allocating call of a large output costs the OS's page faults as
 * well as the kernel. glibc serves blocks of 32 MiB and more (its largest
 * dynamic mmap threshold) with a fresh mmap on every allocation and unmaps
 * them on free, so each call faults in and zeroes every page again.
 * Measured (bench/bench_alloc.py, AMD Zen 5, one thread): softmax_jacobian
 * of 1000 x 100 float32 (40 MB) took 3.23 ms allocating without this cache,
 * 0.91 ms with it and 0.88 ms with out=. A freed block
 * kept here is handed to the next output of about its size with its pages
 * already mapped, which is what a caller that passes out= gets.
 *
 * The blocks: each carries a header before its data (its capacity, the
 * size it was asked for, and the pointer that malloc returned), and its data
 * starts on a 64-byte boundary (a cache line, and the alignment of an
 * AVX-512 register), at one of CSM_OC_COLOURS offsets within its page,
 * taken in turn by the blocks as they are made (csm_oc_new). Blocks at one
 * offset put the same element of every array on the same L1 set and
 * 4 KiB alias: y = softmax(x) and then softmax_backward(y, g) took both
 * their outputs at offset 64 before, and on an AMD Zen 4 (32 KiB L1d), one
 * thread, float32 16384 x 1000, with y at offset 64 and g at 16 (NumPy's),
 * softmax_backward out= took 6.9 ms with its output at offset 64, 6.2 at
 * 128, 5.4 at 0 or 16, and 5.0-5.4 at 256, 512, 576, 1088, 2112, 3136,
 * 3648 or 4032 (best of 12, two runs). Only outputs of CSM_OC_MIN_BYTES or
 * more come here (_alloc.pyx); smaller ones keep NumPy's own allocator.
 *
 * The cache holds at most CSM_OC_SLOTS blocks and csm_oc.limit bytes; a
 * block larger than the limit is freed at once, and freeing a block into a
 * full cache evicts the oldest. A block is reused for a request of at most
 * its capacity and at least 3/4 of it, so a small output never pins a large
 * block. The default limit, 256 MiB, holds the largest output of the
 * bench's cases (16384 x 1000 float64, 131 MB) with room for another; 8
 * slots hold the distinct outputs of a training step (forward, backward,
 * loss gradient, Jacobian) with room to spare. Every function takes a
 * spin lock: NumPy calls the allocator with the GIL held, but nothing here
 * relies on it. */
#ifndef CSM_OUTCACHE_H
#define CSM_OUTCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
  #include <sys/mman.h>
#endif
#if defined(_MSC_VER)
  #include <intrin.h>
#endif

enum {
    CSM_OC_ALIGN = 64,
    CSM_OC_SLOTS = 8,
    /* Offsets of blocks within their pages: 64 + 512 c for c = 1 to 7, so
     * 512 bytes or more from each other and from the offsets 0 to 64 where
     * page-aligned arrays and glibc's large blocks (NumPy's) start. */
    CSM_OC_COLOURS = 7,
    CSM_OC_COLOUR_STEP = 512,
    CSM_OC_PAGE = 4096
};
/* Outputs of at least this many bytes take this allocator: below it glibc
 * reuses its heap (its mmap threshold rises to the size of a freed block)
 * and a miss would cost little anyway. */
#define CSM_OC_MIN_BYTES ((size_t)1 << 20)
/* Capacities are rounded up to this (4 KiB pages), so that outputs of
 * nearly the same size share blocks. */
#define CSM_OC_GRAIN ((size_t)4096)

typedef struct {
    void *raw;     /* what malloc returned */
    size_t cap;    /* usable bytes from the data pointer */
    size_t size;   /* bytes asked for (what NumPy passes back to free) */
    size_t pad_;   /* keeps the header a multiple of 16 bytes */
} csm_oc_head;

static struct {
    volatile long lock;
    void *slot[CSM_OC_SLOTS];   /* data pointers, NULL where empty */
    uint64_t age[CSM_OC_SLOTS]; /* insertion order, for eviction */
    uint64_t clock;
    size_t bytes;               /* capacity held in the cache */
    size_t limit;               /* the most it may hold */
    uint64_t hits, misses;
    unsigned long colour;       /* blocks made so far: the next one's offset */
} csm_oc = {0, {0}, {0}, 0, 0, (size_t)256 << 20, 0, 0, 0};

static void csm_oc_lock(void)
{
#if defined(_MSC_VER)
    while (_InterlockedExchange(&csm_oc.lock, 1))
        ;
#else
    while (__atomic_exchange_n(&csm_oc.lock, 1, __ATOMIC_ACQUIRE))
        ;
#endif
}

static void csm_oc_unlock(void)
{
#if defined(_MSC_VER)
    _InterlockedExchange(&csm_oc.lock, 0);
#else
    __atomic_store_n(&csm_oc.lock, 0, __ATOMIC_RELEASE);
#endif
}

static csm_oc_head *csm_oc_head_of(void *p)
{
    return (csm_oc_head *)((char *)p - sizeof(csm_oc_head));
}

/* A new block of at least size bytes, or NULL. */
static void *csm_oc_new(size_t size)
{
    size_t cap = size < CSM_OC_GRAIN ? CSM_OC_GRAIN : size;
    if (cap > SIZE_MAX - CSM_OC_GRAIN - CSM_OC_PAGE - sizeof(csm_oc_head))
        return NULL;
    cap = (cap + CSM_OC_GRAIN - 1) / CSM_OC_GRAIN * CSM_OC_GRAIN;
    char *raw = (char *)malloc(cap + CSM_OC_PAGE + sizeof(csm_oc_head));
    if (raw == NULL)
        return NULL;
#if defined(_MSC_VER)
    const unsigned long n = (unsigned long)_InterlockedIncrement((volatile long *)&csm_oc.colour) - 1;
#else
    const unsigned long n = __atomic_fetch_add(&csm_oc.colour, 1, __ATOMIC_RELAXED);
#endif
    const uintptr_t want = CSM_OC_ALIGN + CSM_OC_COLOUR_STEP * (1 + n % CSM_OC_COLOURS);
    uintptr_t d = (uintptr_t)(raw + sizeof(csm_oc_head));
    d += (want + CSM_OC_PAGE - d % CSM_OC_PAGE) % CSM_OC_PAGE; /* d % page == want: under a page on */
    void *p = (void *)d;
    csm_oc_head *h = csm_oc_head_of(p);
    h->raw = raw;
    h->cap = cap;
    h->size = size;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    /* As NumPy does for its own blocks of 4 MiB or more: transparent huge
     * pages fault in 512 times fewer pages. */
    if (cap >= ((size_t)4 << 20)) {
        uintptr_t lo = (d + 4095) & ~(uintptr_t)4095, hi = (d + cap) & ~(uintptr_t)4095;
        if (hi > lo)
            (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    }
#endif
    return p;
}

static void csm_oc_release(void *p)
{
    free(csm_oc_head_of(p)->raw);
}

/* Evicts the oldest block; returns it (to be released outside the lock). */
static void *csm_oc_evict_locked(void)
{
    int oldest = -1;
    for (int i = 0; i < CSM_OC_SLOTS; ++i)
        if (csm_oc.slot[i] && (oldest < 0 || csm_oc.age[i] < csm_oc.age[oldest]))
            oldest = i;
    if (oldest < 0)
        return NULL;
    void *p = csm_oc.slot[oldest];
    csm_oc.slot[oldest] = NULL;
    csm_oc.bytes -= csm_oc_head_of(p)->cap;
    return p;
}

static void *csm_oc_malloc(void *ctx, size_t size)
{
    (void)ctx;
    int best = -1;
    csm_oc_lock();
    for (int i = 0; i < CSM_OC_SLOTS; ++i) {
        void *p = csm_oc.slot[i];
        if (p == NULL)
            continue;
        const size_t cap = csm_oc_head_of(p)->cap;
        if (cap >= size && cap - cap / 4 <= size &&
            (best < 0 || cap < csm_oc_head_of(csm_oc.slot[best])->cap))
            best = i;
    }
    void *p = NULL;
    if (best >= 0) {
        p = csm_oc.slot[best];
        csm_oc.slot[best] = NULL;
        csm_oc.bytes -= csm_oc_head_of(p)->cap;
#if defined(_MSC_VER)
        *(volatile uint64_t *)&csm_oc.hits = csm_oc.hits + 1;  /* (csm_oc_hits) */
#else
        __atomic_store_n(&csm_oc.hits, csm_oc.hits + 1, __ATOMIC_RELAXED);
#endif
    } else {
        csm_oc.misses++;
    }
    csm_oc_unlock();
    if (p != NULL) {
        csm_oc_head_of(p)->size = size;
        return p;
    }
    return csm_oc_new(size);
}

static void *csm_oc_calloc(void *ctx, size_t nelem, size_t elsize)
{
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return NULL;
    void *p = csm_oc_malloc(ctx, nelem * elsize);
    if (p != NULL)
        memset(p, 0, nelem * elsize);
    return p;
}

static void csm_oc_free(void *ctx, void *p, size_t size)
{
    (void)ctx;
    (void)size; /* the header knows the capacity */
    if (p == NULL)
        return;
    const size_t cap = csm_oc_head_of(p)->cap;
    void *evicted[CSM_OC_SLOTS];
    int n_evicted = 0, kept = 0;
    csm_oc_lock();
    if (cap <= csm_oc.limit) {
        while (csm_oc.bytes + cap > csm_oc.limit && n_evicted < CSM_OC_SLOTS) {
            void *e = csm_oc_evict_locked();
            if (e == NULL)
                break;
            evicted[n_evicted++] = e;
        }
        int free_slot = -1;
        for (int i = 0; i < CSM_OC_SLOTS && free_slot < 0; ++i)
            if (csm_oc.slot[i] == NULL)
                free_slot = i;
        if (free_slot < 0 && n_evicted < CSM_OC_SLOTS) {
            evicted[n_evicted++] = csm_oc_evict_locked();
            for (int i = 0; i < CSM_OC_SLOTS && free_slot < 0; ++i)
                if (csm_oc.slot[i] == NULL)
                    free_slot = i;
        }
        if (free_slot >= 0 && csm_oc.bytes + cap <= csm_oc.limit) {
            csm_oc.slot[free_slot] = p;
            csm_oc.age[free_slot] = ++csm_oc.clock;
            csm_oc.bytes += cap;
            kept = 1;
        }
    }
    csm_oc_unlock();
    for (int i = 0; i < n_evicted; ++i)
        csm_oc_release(evicted[i]);
    if (!kept)
        csm_oc_release(p);
}

static void *csm_oc_realloc(void *ctx, void *p, size_t size)
{
    if (p == NULL)
        return csm_oc_malloc(ctx, size);
    csm_oc_head *h = csm_oc_head_of(p);
    if (size <= h->cap) {
        h->size = size;
        return p;
    }
    void *q = csm_oc_malloc(ctx, size);
    if (q == NULL)
        return NULL; /* p stays valid, as realloc's contract says */
    memcpy(q, p, h->size);
    csm_oc_free(ctx, p, h->size);
    return q;
}

/* Sets the cache's limit in bytes (0 empties and disables it); returns the
 * old one. Blocks past the new limit are freed. */
static size_t csm_oc_set_limit(size_t limit)
{
    void *evicted[CSM_OC_SLOTS];
    int n_evicted = 0;
    csm_oc_lock();
    const size_t old = csm_oc.limit;
    csm_oc.limit = limit;
    while (csm_oc.bytes > limit && n_evicted < CSM_OC_SLOTS) {
        void *e = csm_oc_evict_locked();
        if (e == NULL)
            break;
        evicted[n_evicted++] = e;
    }
    csm_oc_unlock();
    for (int i = 0; i < n_evicted; ++i)
        csm_oc_release(evicted[i]);
    return old;
}

typedef struct {
    size_t limit, bytes;
    int blocks;
    uint64_t hits, misses;
} csm_oc_stats;

/* Allocations the cache has served so far. An output allocated between two
 * reads that differ took a block that an earlier output wrote: its pages
 * are mapped and hold old lines, not the fresh zeroed pages that a miss
 * gets, and the kernels write it as they write an out= (RUN_FRESH_OUT).
 * Read without the lock (every allocating call reads it twice, the smallest
 * too): the count is written under the lock by one thread at a time, as
 * one 64-bit store. */
static unsigned long long csm_oc_hits(void)
{
#if defined(_MSC_VER)
    return *(volatile const uint64_t *)&csm_oc.hits;
#else
    return __atomic_load_n(&csm_oc.hits, __ATOMIC_RELAXED);
#endif
}

static csm_oc_stats csm_oc_get_stats(void)
{
    csm_oc_stats s;
    csm_oc_lock();
    s.limit = csm_oc.limit;
    s.bytes = csm_oc.bytes;
    s.blocks = 0;
    for (int i = 0; i < CSM_OC_SLOTS; ++i)
        s.blocks += csm_oc.slot[i] != NULL;
    s.hits = csm_oc.hits;
    s.misses = csm_oc.misses;
    csm_oc_unlock();
    return s;
}

/* After fork, in the child: the lock may have been taken by a thread that
 * the child does not have. */
static void csm_oc_after_fork(void)
{
    csm_oc.lock = 0;
}

#ifdef Py_PYTHON_H
/* NumPy's handler: a capsule named "mem_handler" around it (NEP 49). */
static PyDataMem_Handler csm_oc_handler = {
    "csoftmax_output_cache", 1,
    {NULL, csm_oc_malloc, csm_oc_calloc, csm_oc_realloc, csm_oc_free}};

static PyObject *csm_oc_capsule(void)
{
    return PyCapsule_New(&csm_oc_handler, "mem_handler", NULL);
}
#endif

#endif /* CSM_OUTCACHE_H */
