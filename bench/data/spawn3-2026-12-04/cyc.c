#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <time.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/futex.h>
#include <linux/sched.h>
extern char **environ;
static char *argv_[] = {"/bin/true", NULL};
static int child_min(void *a) { int fd = *(int *)a; dup2(fd, 1); syscall(SYS_close_range, 3, ~0U, 0); execve("/bin/true", argv_, environ); _exit(127); }
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec*1e6+t.tv_nsec/1e3;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
static char stack[65536] __attribute__((aligned(16)));
static volatile int32_t tid;
static void busy(double us){ double t=now(); while(now()-t<us); }
int main(int argc, char **argv) {
    int n = atoi(argv[1]); double work = atof(argv[2]); int nv = 2;
    double *w[2], *r[2]; for (int v=0; v<nv; v++){w[v]=malloc(sizeof(double)*n); r[v]=malloc(sizeof(double)*n);}
    for (int i = 0; i < n; i++) for (int v = 0; v < nv; v++) {
        int p[2]; pipe2(p, O_CLOEXEC); int fd = p[1]; pid_t pid;
        double t0 = now();
        if (v == 0) pid = clone(child_min, stack + sizeof stack, CLONE_VM|CLONE_VFORK|SIGCHLD, &fd);
        else { tid = 1; pid = clone(child_min, stack + sizeof stack, CLONE_VM|CLONE_CHILD_CLEARTID|SIGCHLD, &fd, NULL, NULL, &tid); }
        double t1 = now();
        busy(work);  /* parent's post-spawn work */
        if (v == 1) while (tid != 0) syscall(SYS_futex, &tid, FUTEX_WAIT, tid, NULL, NULL, 0);
        r[v][i] = now() - t0;
        close(p[1]); busy(work); char b; read(p[0], &b, 1); close(p[0]);
        int st; waitpid(pid, &st, 0);
        w[v][i] = now() - t0;
    }
    const char *names[] = {"vfork", "CLONE_VM + CLEARTID futex"};
    for (int v=0; v<nv; v++){ qsort(w[v], n, sizeof(double), cmp); qsort(r[v], n, sizeof(double), cmp); printf("%-28s cycle p10 %.1f p25 %.1f med %.1f | until exec confirmed p25 %.1f med %.1f\n", names[v], w[v][n/10], w[v][n/4], w[v][n/2], r[v][n/4], r[v][n/2]); }
}
