// Streams bytes over one loopback TCP connection and prints the throughput and each
// side's CPU time: what the kernel's part of an all-reduce costs on this machine.
// Used for the "Where world 4 on two cores is bound" table of docs/PERFORMANCE.md.
//
//   cc -O2 -o /tmp/loopback_stream tools/loopback_stream.c
//   /tmp/loopback_stream MODE BYTES SOCKET_BUFFER_BYTES     (SPIN=1: receiver never blocks)
//
// MODE 0: send(); MODE 1: vmsplice() the buffer into a pipe, then splice() it into
// the socket (no copy on the sending side). 1 MiB per call, like the ring's segments.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void report(const char *who) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    fprintf(stderr, "%s cpu user %.2f s system %.2f s\n", who,
            usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6,
            usage.ru_stime.tv_sec + usage.ru_stime.tv_usec * 1e-6);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s MODE BYTES SOCKET_BUFFER_BYTES\n", argv[0]); return 2; }
    int mode = atoi(argv[1]), bufferBytes = atoi(argv[3]), one = 1;
    long total = atol(argv[2]);
    const int segment = 1 << 20;
    const long sourceBytes = 64L << 20;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (bind(listener, (void *)&address, sizeof address) || listen(listener, 1) ||
        getsockname(listener, (void *)&address, &length)) { perror("listen"); return 1; }
    pid_t child = fork();
    if (child == 0) {  // receiver
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (bufferBytes) setsockopt(s, SOL_SOCKET, SO_RCVBUF, &bufferBytes, sizeof bufferBytes);
        if (connect(s, (void *)&address, sizeof address)) { perror("connect"); _exit(1); }
        char *buffer = aligned_alloc(4096, segment);
        int flags = getenv("SPIN") ? MSG_DONTWAIT : 0;
        for (long received = 0; received < total;) {
            ssize_t n = recv(s, buffer, segment, flags);
            if (n == 0) break;
            if (n > 0) received += n;
        }
        report("receiver");
        _exit(0);
    }
    int s = accept(listener, 0, 0);
    if (bufferBytes) setsockopt(s, SOL_SOCKET, SO_SNDBUF, &bufferBytes, sizeof bufferBytes);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char *source = aligned_alloc(4096, sourceBytes);
    memset(source, 1, sourceBytes);
    int pipeEnds[2];
    if (pipe(pipeEnds)) { perror("pipe"); return 1; }
    fcntl(pipeEnds[1], F_SETPIPE_SZ, segment);
    double start = now();
    for (long sent = 0; sent < total;) {
        char *piece = source + sent % sourceBytes;
        ssize_t n;
        if (mode == 0) {
            n = send(s, piece, segment, 0);
        } else {
            struct iovec vector = {piece, segment};
            n = vmsplice(pipeEnds[1], &vector, 1, 0);
            for (ssize_t left = n; left > 0;) {
                ssize_t moved = splice(pipeEnds[0], 0, s, 0, left, SPLICE_F_MORE);
                if (moved <= 0) { perror("splice"); return 1; }
                left -= moved;
            }
        }
        if (n <= 0) { perror("send"); return 1; }
        sent += n;
    }
    int status;
    waitpid(child, &status, 0);
    double seconds = now() - start;
    printf("mode %d: %.2f GB/s\n", mode, total / seconds / 1e9);
    report("sender");
    return 0;
}
