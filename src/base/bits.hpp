// Bit and size arithmetic (the kernel's ilog2, roundup_pow_of_two, ALIGN).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace uslub {

constexpr unsigned ilog2(std::uint64_t v) {
  return 63u - static_cast<unsigned>(std::countl_zero(v | 1));
}
constexpr std::uint64_t roundup_pow_of_two(std::uint64_t v) {
  return v <= 1 ? 1 : std::bit_ceil(v);
}
constexpr unsigned order_base_2(std::uint64_t v) {
  return v <= 1 ? 0 : ilog2(v - 1) + 1;
}
constexpr std::size_t align_up(std::size_t v, std::size_t a) {
  return (v + a - 1) & ~(a - 1);
}
constexpr std::size_t align_down(std::size_t v, std::size_t a) {
  return v & ~(a - 1);
}
constexpr bool is_power_of_2(std::uint64_t v) {
  return v != 0 && (v & (v - 1)) == 0;
}
inline bool is_aligned(const void* p, std::size_t a) {
  return (reinterpret_cast<std::uintptr_t>(p) & (a - 1)) == 0;
}

}  // namespace uslub
