/* tests/kernel_attack.rs: spawn N short-lived processes, one at a time, each
 * exec'ing PROGRAM, and print how many exited with 0.
 * Every one is a new process id (with a large kernel.pid_max) that forks and
 * execs: it is what a workload does to evict its own per-process records
 * from a kernel map that evicts its oldest entries when full (LRU): PROGRAM
 * gets one argument ("again": exit0.c then execs itself once more). vfork:
 * tens of thousands a second on an idle machine. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    long n = atol(argv[1]);
    char *args[] = {argv[2], "again", NULL};
    char *env[] = {NULL};
    long ok = 0;
    for (long i = 0; i < n; i++) {
        pid_t p = vfork();
        if (p == 0) {
            execve(argv[2], args, env);
            _exit(127);
        }
        int st;
        if (p > 0 && waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0)
            ok++;
    }
    printf("%ld\n", ok);
    return 0;
}
