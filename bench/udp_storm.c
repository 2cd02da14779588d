/* Many-flow UDP storm for the drop benchmarks: datagrams to closed ports on
 * the loopback, cycling through SOCKETS source ports x PORTS destination
 * ports (distinct flows = SOCKETS * PORTS), at about RATE datagrams/s for
 * SECONDS. Prints the number of datagrams the kernel accepted.
 * usage: udp_storm 4|6 SOCKETS PORTS RATE SECONDS */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define FIRST_PORT 20000

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s 4|6 SOCKETS PORTS RATE SECONDS\n", argv[0]);
        return 2;
    }
    int v6 = atoi(argv[1]) == 6, nsock = atoi(argv[2]), nports = atoi(argv[3]);
    double rate = atof(argv[4]), seconds = atof(argv[5]);
    int *fds = calloc(nsock, sizeof(int));
    for (int i = 0; i < nsock; i++)
        fds[i] = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_storage dst[BATCH];
    struct iovec iov;
    struct mmsghdr msgs[BATCH];
    char payload[64];
    memset(payload, 'x', sizeof(payload));
    iov.iov_base = payload;
    iov.iov_len = sizeof(payload);
    memset(msgs, 0, sizeof(msgs));
    memset(dst, 0, sizeof(dst));
    for (int i = 0; i < BATCH; i++) {
        if (v6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&dst[i];
            a->sin6_family = AF_INET6;
            a->sin6_addr = in6addr_loopback;
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&dst[i];
            a->sin_family = AF_INET;
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        }
        msgs[i].msg_hdr.msg_name = &dst[i];
        msgs[i].msg_hdr.msg_namelen = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    double start = now(), end = start + seconds;
    unsigned long long sent = 0, port = 0;
    int sock = 0;
    while (now() < end) {
        double due = start + sent / rate;   /* pace: never ahead of RATE */
        double t = now();
        if (t < due) {
            struct timespec ts = {0, (long)((due - t) * 1e9)};
            nanosleep(&ts, NULL);
        }
        for (int i = 0; i < BATCH; i++) {
            unsigned short p = htons(FIRST_PORT + port % nports);
            if (v6)
                ((struct sockaddr_in6 *)&dst[i])->sin6_port = p;
            else
                ((struct sockaddr_in *)&dst[i])->sin_port = p;
            if (++port % nports == 0)
                sock = (sock + 1) % nsock;
        }
        int n = sendmmsg(fds[sock], msgs, BATCH, 0);
        if (n > 0)
            sent += n;
    }
    printf("%llu\n", sent);
    return 0;
}
