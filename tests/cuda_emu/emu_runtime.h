// Runtime of the CUDA emulator: the threads of one block are OpenMP threads,
// blocks run one after another. This file holds what the built-ins need
// (barriers, warp exchange, error state, watchdog); cuda_builtins.h maps the
// CUDA names onto it and emu_launch.h runs grids.
#pragma once
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

inline thread_local uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim, gridDim;

namespace emu {

// ------------------------------------------------------------ errors

inline std::atomic<int> failed{0};
inline char message[1024];

// The first error of a launch wins; later ones are usually its consequences.
inline void fail(const char* fmt, ...) {
    if (failed.exchange(1)) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
}

// ------------------------------------------------------------ watchdog

// Every barrier bumps `progress`. A barrier that some thread never reaches
// blocks the others forever inside `omp barrier`, which cannot be
// interrupted, so the watchdog reports where the block hangs and ends the
// process: a crash that names the bug beats a CI run that times out.
inline std::atomic<long long> progress{0};
inline std::atomic<bool> running{false};
inline const char* running_kernel = "";
inline int stall_limit_s = 60;

inline void watchdog_start() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (const char* s = getenv("CSOFTMAX_EMU_STALL_S")) stall_limit_s = atoi(s) > 0 ? atoi(s) : stall_limit_s;
        std::thread([] {
            long long seen = -1;
            int idle = 0;
            for (;;) {
                std::this_thread::sleep_for(std::chrono::seconds(1));
                const long long now = progress.load();
                if (!running.load() || now != seen) {
                    seen = now;
                    idle = 0;
                    continue;
                }
                if (++idle >= stall_limit_s) {
                    fprintf(stderr,
                            "cuda_emu watchdog: no barrier passed for %d s in %s, block %u of %u "
                            "(%u threads): deadlock at a __syncthreads or shuffle that not every thread reaches\n",
                            idle, running_kernel, blockIdx.x, gridDim.x, blockDim.x);
                    fflush(stderr);
                    _exit(86);
                }
            }
        }).detach();
    });
}

// ------------------------------------------------------------ __syncthreads

// Barrier call sites, written by thread 0 before barrier n into slot n & 1 and
// compared by every thread after it: threads at different __syncthreads (a
// barrier in divergent code) are reported, not silently matched up.
inline int barrier_line[2];
inline thread_local long long barriers_passed;

inline void syncthreads(int line) {
    const long long n = barriers_passed++;
    if (threadIdx.x == 0) barrier_line[n & 1] = line;
    progress.fetch_add(1, std::memory_order_relaxed);
#pragma omp barrier
    if (barrier_line[n & 1] != line)
        fail("__syncthreads #%lld: thread %u waits at line %d, thread 0 at line %d", n, threadIdx.x, line,
             barrier_line[n & 1]);
}

// ------------------------------------------------------------ warps

// Shuffles go through a per-warp exchange buffer and a per-warp barrier, so
// one warp can shuffle while the others run elsewhere. The buffer has two
// halves used by alternate shuffles: shuffle n + 2 overwrites half n & 1 only
// after every lane arrived at shuffle n + 1, i.e. after it read shuffle n, so
// one barrier per shuffle is enough. The barrier sleeps in the kernel (atomic
// wait, a futex): hundreds of threads share two cores.
struct Warp {
    // arrived lanes in the low byte, returned lanes above it
    std::atomic<unsigned> state{0};
    std::atomic<unsigned> generation{0};
    alignas(16) unsigned char slot[2][32][16];
    int line[2][32];
    long long sequence[2][32];
};
inline Warp warps[32];
inline thread_local long long shuffles_done;

inline void warp_release(Warp& w, unsigned arrived) {
    w.state.fetch_sub(arrived);
    w.generation.fetch_add(1);
    w.generation.notify_all();
}

inline void warp_barrier(Warp& w) {
    const unsigned generation = w.generation.load();
    progress.fetch_add(1, std::memory_order_relaxed);
    const unsigned s = w.state.fetch_add(1) + 1;
    const unsigned arrived = s & 0xffu, exited = s >> 8;
    if (arrived + exited == 32) {
        if (exited) fail("shuffle in warp %u after %u of its lanes returned", threadIdx.x / 32, exited);
        warp_release(w, arrived);
        return;
    }
    while (w.generation.load() == generation) w.generation.wait(generation);
}

inline void lane_exit() {
    Warp& w = warps[threadIdx.x / 32];
    const unsigned s = w.state.fetch_add(1u << 8) + (1u << 8);
    const unsigned arrived = s & 0xffu, exited = s >> 8;
    if (arrived > 0 && arrived + exited == 32) {
        fail("shuffle in warp %u after %u of its lanes returned", threadIdx.x / 32, exited);
        warp_release(w, arrived);
    }
}

inline void reset_warps() {
    for (Warp& w : warps) w.state = 0;
}

// src_lane is the lane to read; the caller applied CUDA's segment rules.
template <class V> V exchange(int line, unsigned mask, V v, int src_lane) {
    static_assert(sizeof(V) <= 16, "shuffle of a type wider than the exchange slot");
    // Both conditions are the same for every lane, so returning early cannot
    // leave a lane waiting for the others.
    if (mask != 0xffffffffu) {
        fail("line %d: shuffle with partial mask %#x is not emulated", line, mask);
        return v;
    }
    if (blockDim.x % 32) {
        fail("line %d: shuffle in a block of %u threads (not whole warps)", line, blockDim.x);
        return v;
    }
    const int lane = threadIdx.x & 31;
    Warp& w = warps[threadIdx.x / 32];
    const long long n = shuffles_done++;
    const int half = (int)(n & 1);
    std::memcpy(w.slot[half][lane], &v, sizeof(V));
    w.line[half][lane] = line;
    w.sequence[half][lane] = n;
    warp_barrier(w);
    if (w.line[half][0] != line || w.sequence[half][0] != n)
        fail("warp %u: lane %d is at its shuffle #%lld (line %d), lane 0 at #%lld (line %d)", threadIdx.x / 32, lane,
             n, line, w.sequence[half][0], w.line[half][0]);
    V out;
    std::memcpy(&out, w.slot[half][src_lane], sizeof(V));
    return out;
}

inline bool valid_width(int line, int width) {
    if (width < 1 || width > 32 || (width & (width - 1))) {
        fail("line %d: shuffle width %d is not a power of two in [1, 32]", line, width);
        return false;
    }
    return true;
}

// PTX shfl.sync semantics with c = ((32 - width) << 8) | 31: a lane outside
// the caller's segment in the up direction returns the caller's own value.
template <class V> V shfl_xor(int line, unsigned mask, V v, int lane_mask, int width = 32) {
    const int lane = threadIdx.x & 31;
    int src = lane;
    if (valid_width(line, width)) {
        const int last = (lane & ~(width - 1)) | (width - 1);
        src = lane ^ lane_mask;
        if (src > last) src = lane;
    }
    return exchange(line, mask, v, src);
}

template <class V> V shfl_idx(int line, unsigned mask, V v, int src_lane, int width = 32) {
    const int lane = threadIdx.x & 31;
    int src = lane;
    if (valid_width(line, width)) src = (lane & ~(width - 1)) | (src_lane & (width - 1));
    return exchange(line, mask, v, src);
}

template <class V> V shfl_down(int line, unsigned mask, V v, unsigned delta, int width = 32) {
    const int lane = threadIdx.x & 31;
    int src = lane;
    if (valid_width(line, width)) {
        const int last = (lane & ~(width - 1)) | (width - 1);
        src = lane + (int)delta;
        if (src > last) src = lane;
    }
    return exchange(line, mask, v, src);
}

}  // namespace emu
