/* A program nobody permitted: `ld.so ./payload` maps it without an exec. */
#include <stdio.h>
int main(void) {
    puts("payload ran");
    return 0;
}
