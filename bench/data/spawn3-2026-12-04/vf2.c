#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <time.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/sched.h>
extern char **environ;
static char *argv_[] = {"/bin/true", NULL};
static sigset_t oldmask;
static int child_min(void *a) { int fd = *(int *)a; dup2(fd, 1); syscall(SYS_close_range, 3, ~0U, 0); execve("/bin/true", argv_, environ); _exit(127); }
static int child_ours(void *a) {
    int fd = *(int *)a;
    fcntl(fd, F_SETFL, 0);
    int nul = open("/dev/null", O_RDWR|O_CLOEXEC);
    dup2(nul, 0); dup2(fd, 1);
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &sa, NULL); sigaction(SIGXFSZ, &sa, NULL);
    sigprocmask(SIG_SETMASK, &oldmask, NULL);
    syscall(SYS_close_range, 3, ~0U, 0); execve("/bin/true", argv_, environ); _exit(127); }
static int child_nonull(void *a) {
    int fd = *(int *)a;
    fcntl(fd, F_SETFL, 0);
    dup2(fd, 1);
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &sa, NULL); sigaction(SIGXFSZ, &sa, NULL);
    sigprocmask(SIG_SETMASK, &oldmask, NULL);
    syscall(SYS_close_range, 3, ~0U, 0); execve("/bin/true", argv_, environ); _exit(127); }
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec*1e6+t.tv_nsec/1e3;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
static char stack[65536] __attribute__((aligned(16)));
int main(int argc, char **argv) {
    int n = atoi(argv[1]); int nv = 3;
    signal(SIGPIPE, SIG_IGN); signal(SIGXFSZ, SIG_IGN);
    double *w[3]; for (int v=0; v<nv; v++) w[v]=malloc(sizeof(double)*n);
    for (int i = 0; i < n; i++) for (int v = 0; v < nv; v++) {
        int p[2]; pipe2(p, O_CLOEXEC|O_NONBLOCK);
        int pidfd = -1; int fd = p[1]; pid_t pid;
        double t0 = now();
        if (v == 0) pid = clone(child_min, stack + sizeof stack, CLONE_VM|CLONE_VFORK|SIGCHLD, &fd);
        else { sigset_t all; sigfillset(&all); sigprocmask(SIG_SETMASK, &all, &oldmask);
          pid = clone(v == 1 ? child_ours : child_nonull, stack + sizeof stack, CLONE_VM|CLONE_VFORK|CLONE_PIDFD|SIGCHLD, &fd, &pidfd);
          sigprocmask(SIG_SETMASK, &oldmask, NULL); }
        double t1 = now(); w[v][i] = t1 - t0;
        close(p[1]); int fl = fcntl(p[0], F_GETFL); fcntl(p[0], F_SETFL, fl & ~O_NONBLOCK); char b; read(p[0], &b, 1); close(p[0]);
        int st; waitpid(pid, &st, 0); if (pidfd >= 0) close(pidfd);
    }
    const char *names[] = {"minimal", "ours (C replica)", "ours without /dev/null open"};
    for (int v=0; v<nv; v++){ qsort(w[v], n, sizeof(double), cmp); printf("%-32s p10 %.1f p25 %.1f med %.1f us\n", names[v], w[v][n/10], w[v][n/4], w[v][n/2]); }
}
