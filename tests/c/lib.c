/* One of ten small shared libraries (built as libauthzN.so with -DN=...). */
#define NAME2(a, b) a##b
#define NAME(a, b) NAME2(a, b)
int NAME(authz_lib, N)(void) { return N; }
