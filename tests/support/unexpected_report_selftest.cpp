// Self-test of the test main's listener (test_main.cpp): a `uslub: BUG` report that the test
// did not capture fails the test (ctest support_unexpected_report_fails has WILL_FAIL and
// support_unexpected_report_message checks the failure names the report); the same report
// inside a report_capture does not (support_expected_report_passes).
#include <gtest/gtest.h>
#include <uslub/slab.h>

#include "test_support.hpp"

namespace uslub::test {
namespace {

// A real report: a double free, caught by the always-on check.
void double_free(const char* name) {
  kmem_cache* s = kmem_cache_create(name, 64, 0, SLAB_NO_MERGE, nullptr);
  ASSERT_NE(s, nullptr);
  void* keep = kmem_cache_alloc(s, 0);  // the slab stays a slab
  void* p = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, p);
  kmem_cache_free(s, p);
  kmem_cache_free(s, keep);
  kmem_cache_destroy(s);
}

TEST(UnexpectedReport, FailsTheTest) {
  double_free("selftest-unexpected");
}

TEST(UnexpectedReport, CapturedIsExpected) {
  report_capture cap;
  double_free("selftest-expected");
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG selftest-expected: Object already free");
}

}  // namespace
}  // namespace uslub::test
