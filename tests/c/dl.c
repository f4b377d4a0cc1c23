/* dlopen(argv[1]) and call evil_symbol: exit 0 when it loaded, 3 when
 * dlopen failed, 4 when the symbol is missing. With argv[1] == "-loop N LIB",
 * dlopen/dlclose LIB N times (the benchmark). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "-loop") == 0) {
        long n = atol(argv[2]);
        for (long i = 0; i < n; i++) {
            void *h = dlopen(argv[3], RTLD_NOW | RTLD_LOCAL);
            if (!h) {
                fprintf(stderr, "%s\n", dlerror());
                return 3;
            }
            dlclose(h);
        }
        return 0;
    }
    if (argc != 2) {
        return 2;
    }
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        fprintf(stderr, "%s\n", dlerror());
        return 3;
    }
    int (*f)(void) = (int (*)(void))dlsym(h, "evil_symbol");
    return f ? 0 : 4;
}
