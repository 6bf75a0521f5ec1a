/* tests/kernel_attack.rs: the smallest program there is (static, no libc),
 * exec'ed by churn.c. With an argument it first execs itself once more
 * without one (a second exec of the same process: the kernel map entry it
 * replaces is marked recently used, as the attacker's own record is), then
 * exits with 0. Built with `cc -static -nostdlib`; x86-64 only. */
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

void start_c(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    if (argc > 1) {
        char *args[] = {argv[0], 0};
        char *env[] = {0};
        sys3(59, (long)argv[0], (long)args, (long)env); /* execve */
    }
    sys3(60, 0, 0, 0); /* exit */
    for (;;) {
    }
}

__attribute__((naked)) void _start(void) {
    __asm__ volatile("mov %rsp, %rdi\n\tcall start_c\n\thlt");
}
