#define _GNU_SOURCE
#include "CSharedMemory.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif

int mae_futex_wait(uint32_t *address, uint32_t expected, int64_t timeout_nanoseconds) {
    struct timespec timeout = {
        .tv_sec = (time_t)(timeout_nanoseconds / 1000000000),
        .tv_nsec = (long)(timeout_nanoseconds % 1000000000),
    };
    // Not FUTEX_PRIVATE_FLAG: the waiters and wakers are different processes.
    return (int)syscall(SYS_futex, address, FUTEX_WAIT, expected, &timeout, NULL, 0);
}

int mae_futex_wake_all(uint32_t *address) {
    return (int)syscall(SYS_futex, address, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
}

int mae_memfd_create(const char *name) {
    return (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC);
}

int mae_pidfd_open(int pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}
