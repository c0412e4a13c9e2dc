/* The pod sandbox's pause process: holds the pod's namespaces and reaps zombies until told to
 * stop. The upstream image (registry.k8s.io/pause) cannot be pulled here; this is the same
 * behaviour as kubernetes/build/pause/linux/pause.c, built static and imported under the name
 * containerd expects (PAUSE_IMAGE in versions.env). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void sigdown(int signo) { (void)signo; _exit(0); }

static void sigreap(int signo) {
  (void)signo;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction down = {.sa_handler = sigdown};
  struct sigaction reap = {.sa_handler = sigreap, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &down, NULL) < 0 || sigaction(SIGTERM, &down, NULL) < 0 ||
      sigaction(SIGCHLD, &reap, NULL) < 0)
    return 1;
  for (;;) pause();
}
