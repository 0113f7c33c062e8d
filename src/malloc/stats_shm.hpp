// The layout of /dev/shm/uslub.<pid>: a process's statistics, published for `uslub stat` and
// `uslub top` (tools/uslub_stat.cpp reads it; stats_shm.cpp writes it).
//
// Protocol (one writer: the process's publisher thread; any number of readers):
//   - a reader increments `request` and wakes it (FUTEX_WAKE, shared futex);
//   - the publisher, asleep on `request`, takes a snapshot (uslub_stats, every cache's
//     uslub_cache_stats, the text and JSON reports) into its own buffers, then copies it in
//     under the seqcount `seq` (odd while it writes) and advances `generation`;
//   - the reader waits for `generation` to pass the value it saw before its request, then
//     copies what it needs and retries while `seq` was odd or changed (a seqcount read).
// The fast paths of the allocator write nothing here: the figures are computed when asked.
#pragma once

#include <uslub/stats.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace uslub {

inline constexpr char kShmMagic[8] = {'U', 'S', 'L', 'U', 'B', 'S', 'H', 'M'};
inline constexpr std::uint32_t kShmVersion = 1;
inline constexpr unsigned kShmMaxCaches = 512;
inline constexpr std::size_t kShmTextBytes = 64 << 10;
inline constexpr std::size_t kShmJsonBytes = 192 << 10;

struct stats_shm {
  char magic[8];
  std::uint32_t version;                    // kShmVersion
  std::uint32_t size;                       // sizeof(stats_shm)
  std::int32_t pid;                         // the publishing process
  std::uint32_t nr_caches;                  // seq: entries of caches[] in use
  std::atomic<std::uint32_t> request;       // readers: ++ then futex wake
  std::atomic<std::uint32_t> seq;           // odd while the publisher writes
  std::atomic<std::uint64_t> generation;    // snapshots published
  std::uint64_t text_len, json_len;         // seq
  uslub_stats summary;                      // seq
  uslub_cache_stats caches[kShmMaxCaches];  // seq
  char text[kShmTextBytes];                 // seq: the USLUB_STATS=1 report
  char json[kShmJsonBytes];                 // seq: the USLUB_STATS=json report
  // `uslub profile PID`: the reader writes prof_path, sets prof_wanted and makes a request;
  // the publisher writes the heap profile to that file, stores prof_result (0 or an errno;
  // ENOTSUP: profiling is off) and advances prof_done.  One such reader at a time.
  char prof_path[4096];
  std::atomic<std::uint32_t> prof_wanted;
  std::int32_t prof_result;
  std::atomic<std::uint64_t> prof_done;
};

// "/uslub.<pid>" (shm_open's name; the file is /dev/shm/uslub.<pid>).
inline void stats_shm_name(char* buf, std::size_t size, int pid) {
  char digits[16];
  int n = 0;
  unsigned v = static_cast<unsigned>(pid);
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v && n < 16);
  const char prefix[] = "/uslub.";
  std::size_t i = 0;
  for (; prefix[i] && i + 1 < size; ++i) buf[i] = prefix[i];
  while (n > 0 && i + 1 < size) buf[i++] = digits[--n];
  buf[i] = '\0';
}

}  // namespace uslub
