// A library whose constructor takes ten seconds: while a thread is inside dlopen of it, that
// thread holds glibc's loader lock (dl_load_lock), which dladdr also takes
// (tests/kfence/kfence_test.cpp: the KFENCE fault handler must not need it).
#include <unistd.h>

__attribute__((constructor)) static void slow_constructor() {
  for (int i = 0; i < 100; ++i) usleep(100 * 1000);
}

extern "C" __attribute__((visibility("default"))) int uslub_slow_ctor_loaded() {
  return 1;
}
