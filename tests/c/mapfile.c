/* Maps argv[2] executable: "mmap" with PROT_EXEC at once, or "mprotect":
 * read-only first, then execute added. Exit 0 when it worked, 3 when mmap
 * was refused, 4 when mprotect was refused. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) { perror("open"); return 2; }
    int direct = strcmp(argv[1], "mmap") == 0;
    void *p = mmap(NULL, 4096, PROT_READ | (direct ? PROT_EXEC : 0), MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "mmap: %s\n", strerror(errno));
        return 3;
    }
    if (!direct && mprotect(p, 4096, PROT_READ | PROT_EXEC) != 0) {
        fprintf(stderr, "mprotect: %s\n", strerror(errno));
        return 4;
    }
    return 0;
}
