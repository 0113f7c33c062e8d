#include <uslub/slab.h>
#include <cstdio>
int main() {
  void* p = kmalloc(100, 0);
  printf("%zu\n", ksize(p));
  kfree(p);
}
