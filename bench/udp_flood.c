/* UDP flood for the drop benchmarks: sendmmsg() batches to ADDR:PORT for
 * SECONDS, then prints the number of datagrams the kernel accepted and the
 * seconds the sending took ("SENT SECONDS"). On stderr, one line per 100 ms
 * window: the datagrams accepted in that window (drops_bench.py reads the
 * rate the flood holds in its undisturbed windows from them).
 * usage: udp_flood ADDR PORT SECONDS */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define WINDOW 0.1   /* seconds */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s ADDR PORT SECONDS\n", argv[0]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &dst.sin_addr);
    char payload[64];
    memset(payload, 'x', sizeof(payload));
    struct iovec iov = {.iov_base = payload, .iov_len = sizeof(payload)};
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        msgs[i].msg_hdr.msg_name = &dst;
        msgs[i].msg_hdr.msg_namelen = sizeof(dst);
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    double start = now(), end = start + atof(argv[3]), window_end = start + WINDOW, t = start;
    unsigned long long sent = 0, window_start = 0;
    while (t < end) {
        int n = sendmmsg(fd, msgs, BATCH, 0);
        if (n > 0)
            sent += n;
        t = now();
        if (t >= window_end) {
            fprintf(stderr, "%llu\n", sent - window_start);
            window_start = sent;
            window_end += WINDOW;
        }
    }
    printf("%llu %.6f\n", sent, t - start);
    return 0;
}
