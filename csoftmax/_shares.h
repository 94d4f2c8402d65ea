/*
 * How the engine's parallel loops hand out the blocks of a call: each thread
 * owns a contiguous share of them and takes its own share's blocks first,
 * then steals the blocks that remain in the other shares.
 *
 * A static split gives each thread the same blocks at every call, so a
 * caller that reuses its arrays (an out= buffer in a training loop) finds
 * each block's output lines still in the cache of the core that wrote them
 * last. A dynamic schedule hands the blocks out in whatever order the
 * threads arrive, so about half of each output's lines move between the
 * cores' caches at every call, each line read for ownership from the other
 * core. Intel Xeon VM (2 cores), AVX2 kernels, float32 out=, calls back to
 * back, us at two threads with the dynamic schedule / with these shares,
 * against one thread: softmax_backward 256 x 64 6.71 / 3.67 against 3.71,
 * 32 x 1000 8.46 / 4.78 against 5.79 (a static split: 4.99), 1024 x 10
 * 4.63 / 3.97 against 4.02 (docs/design.md has the other ops). But a static
 * split waits for its slowest thread: on a busy machine a descheduled thread
 * holds up half the call (bench/bench_contention.py). Stealing keeps the
 * dynamic schedule's answer to that: a thread that is done with its own
 * share takes the next block of another's, so a late thread delays one
 * block, not a share.
 *
 * Each share is a pair of indices on a cache line of its own, claimed by an
 * atomic fetch-and-add (OpenMP's atomic capture, so any OpenMP compiler
 * builds it; without OpenMP there is one thread and no race); blocks never
 * depend on the thread that runs them, so neither do the results.
 */
#ifndef CSOFTMAX_SHARES_H
#define CSOFTMAX_SHARES_H

#include <stddef.h>

typedef struct {
    ptrdiff_t next, end; /* the share's next unclaimed block, and its end */
    char pad_[64 - 2 * sizeof(ptrdiff_t)];
} csm_share_t;

/* n_blocks blocks split into `count` contiguous shares, the first n_blocks
 * % count of them one block longer. */
static inline void csm_shares_init(csm_share_t *s, int count, ptrdiff_t n_blocks)
{
    for (int t = 0; t < count; ++t) {
        s[t].next = n_blocks * t / count;
        s[t].end = n_blocks * (t + 1) / count;
    }
}

/* The next block for thread t, or -1 when every share is used up: from the
 * share (t + *visit) % count, *visit counting the shares the thread has
 * found empty (0 on its first call). A thread past the shares' count (a
 * team larger than the split) only steals. */
static inline ptrdiff_t csm_shares_take(csm_share_t *s, int count, int t, int *visit)
{
    while (*visit < count) {
        csm_share_t *h = &s[(t + *visit) % count];
        ptrdiff_t c;
        /* A share found used up is not claimed from again: its counter
         * then stays near its end. */
#pragma omp atomic read
        c = h->next;
        if (c < h->end) {
#pragma omp atomic capture
            c = h->next++;
            if (c < h->end)
                return c;
        }
        ++*visit;
    }
    return -1;
}

#endif /* CSOFTMAX_SHARES_H */
