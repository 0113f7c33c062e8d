// What the machine's host does with the guest's free memory.
//
// A virtual machine whose balloon device negotiated free page reporting
// (VIRTIO_BALLOON_F_REPORTING, feature bit 5) tells its host about free blocks of
// page_reporting_order (2 MiB on x86-64), and the host discards them.  A transparent huge page
// is such a block, so the fault that makes one resident usually lands on memory the host must
// back again, page by page, before the guest can zero it.  On the VM this project is measured
// on that made uslub's huge-page faults cost 3-20x what 4 KiB faults cost
// (bench/results/2026-12-03-thp-off-3ffeb43.md).  4 KiB faults mostly reuse small free
// blocks, which are never reported.
//
// Raw open/read/getdents64 only: this runs inside malloc's own initialisation (no stdio, no
// opendir, which allocate).
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "platform/platform.hpp"

namespace uslub::platform {

namespace {

constexpr char kBalloonDriver[] = "/sys/bus/virtio/drivers/virtio_balloon/";
constexpr unsigned kFeatureReporting = 5;  // VIRTIO_BALLOON_F_REPORTING

// The device dir/name's feature string ("0110...", one character per bit, bit 0 first) has
// the reporting bit.
bool device_reports(const char* name) {
  char path[128];
  std::size_t dl = sizeof kBalloonDriver - 1, nl = strlen(name);
  if (dl + nl + sizeof "/features" > sizeof path) return false;
  memcpy(path, kBalloonDriver, dl);
  memcpy(path + dl, name, nl);
  memcpy(path + dl + nl, "/features", sizeof "/features");
  char bits[80];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, bits, sizeof bits);
  close(fd);
  return n > static_cast<ssize_t>(kFeatureReporting) && bits[kFeatureReporting] == '1';
}

}  // namespace

bool host_discards_free_huge_pages() {
  int dir = open(kBalloonDriver, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return false;  // no balloon driver: bare metal or a VM without one
  alignas(8) char buf[1024];
  bool reports = false;
  for (;;) {
    long n = syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n && !reports;) {
      // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
      unsigned short reclen;
      memcpy(&reclen, buf + off + 16, sizeof reclen);
      const char* name = buf + off + 19;
      if (strncmp(name, "virtio", 6) == 0) reports = device_reports(name);
      off += reclen;
    }
    if (reports) break;
  }
  close(dir);
  return reports;
}

}  // namespace uslub::platform
