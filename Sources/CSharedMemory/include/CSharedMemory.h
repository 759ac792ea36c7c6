// Atomics and system calls on memory shared between processes, for the
// shared-memory collective. Swift's Synchronization module only has atomics in
// Swift-owned storage, not at an address inside a mapping that other processes
// also map, and Glibc exposes futex, memfd_create and pidfd_open only through
// syscall(), which is variadic and so unreachable from Swift.
#ifndef MAE_C_SHARED_MEMORY_H
#define MAE_C_SHARED_MEMORY_H

#include <stdint.h>

/// Loads *address with acquire ordering: what its writer stored before the
/// matching release store is visible afterwards.
static inline uint32_t mae_atomic_load_acquire_u32(const uint32_t *address) {
    return __atomic_load_n(address, __ATOMIC_ACQUIRE);
}

/// Stores value with release ordering: everything written before is visible to a
/// reader that acquires this value.
static inline void mae_atomic_store_release_u32(uint32_t *address, uint32_t value) {
    __atomic_store_n(address, value, __ATOMIC_RELEASE);
}

/// Adds value and returns the previous contents, sequentially consistent.
static inline uint32_t mae_atomic_fetch_add_u32(uint32_t *address, uint32_t value) {
    return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}

/// A full fence (orders a store before a later load, which release/acquire do not).
static inline void mae_atomic_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/// A hint to the core that this thread spins (x86 PAUSE; yields the sibling hyperthread).
static inline void mae_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/// futex(FUTEX_WAIT) on a word shared between processes: sleeps while *address
/// equals expected, at most timeout_nanoseconds. Returns 0, or -1 with errno
/// (EAGAIN: the word had already changed; ETIMEDOUT; EINTR).
int mae_futex_wait(uint32_t *address, uint32_t expected, int64_t timeout_nanoseconds);

/// futex(FUTEX_WAKE): wakes every process sleeping on address. Returns the number woken or -1.
int mae_futex_wake_all(uint32_t *address);

/// memfd_create(name, MFD_CLOEXEC): an anonymous file that no directory lists and
/// that disappears with the last descriptor or mapping. Returns the descriptor or -1.
int mae_memfd_create(const char *name);

/// pidfd_open(pid, 0): a descriptor that poll reports readable once pid has ended
/// (also while it is an unreaped zombie). Returns the descriptor or -1.
int mae_pidfd_open(int pid);

#endif
