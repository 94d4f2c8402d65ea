// Grid runner of the CUDA emulator and its C interface for Python (ctypes).
// The generated translation unit includes cuda_builtins.h, the kernel source,
// defines the dynamic shared memory array, then includes this file and lists
// the kernels with EMU_KERNEL_TABLE.
#pragma once
#include <climits>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "emu_runtime.h"

namespace emu {

// Parameter type names, to check launch arguments against the signature the
// way CUDA would misread them (an int passed where long long is expected).
template <class T> struct type_name;
#define EMU_TYPE_NAME(T)                                   \
    template <> struct type_name<T> {                      \
        static std::string get() { return #T; }            \
    };
EMU_TYPE_NAME(int)
EMU_TYPE_NAME(unsigned char)
EMU_TYPE_NAME(unsigned int)
EMU_TYPE_NAME(long long)
EMU_TYPE_NAME(float)
EMU_TYPE_NAME(double)
template <class T> struct type_name<T*> {
    static std::string get() { return type_name<T>::get() + "*"; }
};
template <class T> struct type_name<const T*> {
    static std::string get() { return "const " + type_name<T>::get() + "*"; }
};

struct Entry {
    const char* name;
    void (*invoke)(void**);
    std::string (*signature)();
};

template <auto F> struct Kernel;
template <class... P, void (*F)(P...)> struct Kernel<F> {
    template <std::size_t... I> static void call(void** args, std::index_sequence<I...>) {
        F(*static_cast<P*>(args[I])...);
    }
    static void invoke(void** args) { call(args, std::index_sequence_for<P...>{}); }
    static std::string signature() {
        std::string s;
        ((s += s.empty() ? "" : ",", s += type_name<P>::get()), ...);
        return s;
    }
};

constexpr std::size_t smem_guard = 256;
constexpr unsigned char smem_canary = 0xa5;

// Shared memory is garbage on a GPU. Poison it before every block with a
// value per accumulator word alternating between a huge finite number and NaN,
// shifted by one word from block to block: NaN alone would slip through fmax,
// a finite value alone through a sum that overflows anyway.
inline void poison(unsigned char* smem, std::size_t bytes, int word, unsigned block) {
    if (word == 8) {
        for (std::size_t i = 0; i + 8 <= bytes; i += 8) {
            const double v = ((i / 8 + block) & 1) ? std::nan("") : 1.0e300;
            std::memcpy(smem + i, &v, 8);
        }
    } else {
        for (std::size_t i = 0; i + 4 <= bytes; i += 4) {
            const float v = ((i / 4 + block) & 1) ? std::nanf("") : 1.0e30f;
            std::memcpy(smem + i, &v, 4);
        }
    }
    std::memset(smem + bytes, smem_canary, smem_guard);
}

inline int run_grid(const Entry& kernel, unsigned grid, unsigned block, std::size_t smem_bytes, int word,
                    void** args, unsigned char* smem, std::size_t smem_capacity) {
    failed = 0;
    message[0] = 0;
    if (block < 1 || block > 1024) fail("block of %u threads: CUDA allows 1..1024", block);
    if (grid < 1 || grid > (unsigned)INT_MAX) fail("grid of %u blocks: CUDA allows 1..2^31-1", grid);
    if (smem_bytes + smem_guard > smem_capacity)
        fail("%zu bytes of dynamic shared memory: the emulator holds %zu", smem_bytes, smem_capacity - smem_guard);
    if (failed) return 1;
    omp_set_dynamic(0);
    watchdog_start();
    running_kernel = kernel.name;
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    std::vector<long long> passed(block);
    running = true;
    for (unsigned b = 0; b < grid && !failed; ++b) {
        blockIdx = {b, 0, 0};
        poison(smem, smem_bytes, word, b);
        reset_warps();
        progress.fetch_add(1);
        std::atomic<int> team_ok{1};
#pragma omp parallel num_threads(block)
        {
            if ((unsigned)omp_get_num_threads() != block) {
                team_ok = 0;
            } else {
                threadIdx = {(unsigned)omp_get_thread_num(), 0, 0};
                barriers_passed = 0;
                shuffles_done = 0;
                kernel.invoke(args);
                passed[threadIdx.x] = barriers_passed;
                lane_exit();
            }
        }
        if (!team_ok) {
            fail("OpenMP gave fewer than %u threads (OMP_THREAD_LIMIT?)", block);
            break;
        }
        for (unsigned t = 1; t < block; ++t) {
            if (passed[t] != passed[0]) {
                fail("block %u: thread %u passed %lld __syncthreads, thread 0 passed %lld", b, t, passed[t], passed[0]);
                break;
            }
        }
        for (std::size_t i = 0; i < smem_guard; ++i) {
            if (smem[smem_bytes + i] != smem_canary) {
                fail("block %u wrote shared memory at byte %zu, past the %zu bytes launched with", b, smem_bytes + i,
                     smem_bytes);
                break;
            }
        }
    }
    running = false;
    return failed.load();
}

}  // namespace emu

#define EMU_KERNEL(...) {#__VA_ARGS__, &::emu::Kernel<&__VA_ARGS__>::invoke, &::emu::Kernel<&__VA_ARGS__>::signature}

// Defines the C interface over a table of emu::Entry and the shared memory array.
#define EMU_EXPORTS(TABLE, SMEM)                                                                          \
    extern "C" int emu_count() { return (int)(sizeof(TABLE) / sizeof(TABLE[0])); }                        \
    extern "C" const char* emu_name(int i) { return TABLE[i].name; }                                      \
    extern "C" int emu_signature(int i, char* out, int n) {                                               \
        std::snprintf(out, n, "%s", TABLE[i].signature().c_str());                                        \
        return 0;                                                                                         \
    }                                                                                                     \
    extern "C" long long emu_smem_capacity() { return (long long)sizeof(SMEM) - (long long)emu::smem_guard; } \
    extern "C" int emu_launch(int i, unsigned grid, unsigned block, unsigned long long smem_bytes, int word, \
                              void** args, char* err, int n) {                                             \
        const int rc = emu::run_grid(TABLE[i], grid, block, smem_bytes, word, args, SMEM, sizeof(SMEM));  \
        std::snprintf(err, n, "%s", emu::message);                                                        \
        return rc;                                                                                        \
    }
