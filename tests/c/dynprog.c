/* A dynamically linked program with ten libraries of its own (plus libc). */
#include <stdio.h>
int authz_lib1(void); int authz_lib2(void); int authz_lib3(void); int authz_lib4(void);
int authz_lib5(void); int authz_lib6(void); int authz_lib7(void); int authz_lib8(void);
int authz_lib9(void); int authz_lib10(void);

int main(void) {
    int sum = authz_lib1() + authz_lib2() + authz_lib3() + authz_lib4() + authz_lib5() +
              authz_lib6() + authz_lib7() + authz_lib8() + authz_lib9() + authz_lib10();
    if (sum != 55) {
        fprintf(stderr, "wrong sum %d\n", sum);
        return 1;
    }
    return 0;
}
