/* The lab's pod-sandbox process: holds the pod's namespaces open and does
 * nothing else, like Kubernetes' pause. Exits 0 on SIGTERM or SIGINT (PID 1
 * in its PID namespace gets no default handlers, so it must install them). */
#include <signal.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

int main(void) {
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    for (;;)
        pause();
}
