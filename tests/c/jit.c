/* What a JIT does: anonymous memory, written, then made executable (mmap
 * with PROT_EXEC, or mprotect adding it), then run. Exit 0 when the code
 * ran, 3 when mmap was refused, 4 when mprotect was refused. argv[1]:
 * "mmap" (map RWX at once) or "mprotect" (RW, then RX). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    unsigned char code[] = {0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3}; /* mov eax, 7; ret */
    int rwx = argc > 1 && strcmp(argv[1], "mmap") == 0;
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | (rwx ? PROT_EXEC : 0),
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "mmap: %s\n", strerror(errno));
        return 3;
    }
    memcpy(p, code, sizeof code);
    if (!rwx && mprotect(p, 4096, PROT_READ | PROT_EXEC) != 0) {
        fprintf(stderr, "mprotect: %s\n", strerror(errno));
        return 4;
    }
    int (*f)(void) = (int (*)(void))p;
    return f() == 7 ? 0 : 1;
}
