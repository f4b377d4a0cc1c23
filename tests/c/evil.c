/* A library an attacker preloads: its constructor would run inside the
 * victim process. It leaves a marker so a test can tell whether it ran. */
#include <fcntl.h>
#include <unistd.h>

__attribute__((constructor)) static void evil(void) {
    int fd = open("/tmp/authz-evil-ran", O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd >= 0) {
        write(fd, "ran\n", 4);
        close(fd);
    }
}

int evil_symbol(void) { return 42; }
