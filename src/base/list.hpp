// Intrusive circular doubly linked list: the kernel's list_head.
//
// Not thread-safe: every list names the lock that protects it where it is declared.
#pragma once

#include <cstddef>

namespace uslub {

struct list_head {
  list_head* next;
  list_head* prev;
};

inline void INIT_LIST_HEAD(list_head* h) {
  h->next = h->prev = h;
}
inline bool list_empty(const list_head* h) {
  return h->next == h;
}

inline void __list_add(list_head* n, list_head* prev, list_head* next) {
  next->prev = n;
  n->next = next;
  n->prev = prev;
  prev->next = n;
}
inline void list_add(list_head* n, list_head* h) {
  __list_add(n, h, h->next);
}
inline void list_add_tail(list_head* n, list_head* h) {
  __list_add(n, h->prev, h);
}
inline void list_del(list_head* e) {
  e->next->prev = e->prev;
  e->prev->next = e->next;
  e->next = e->prev = nullptr;
}
inline void list_move(list_head* e, list_head* h) {
  list_del(e);
  list_add(e, h);
}
inline void list_move_tail(list_head* e, list_head* h) {
  list_del(e);
  list_add_tail(e, h);
}

template <class T, list_head T::*Member>
inline T* list_entry(list_head* p) {
  const std::size_t off = reinterpret_cast<std::size_t>(&(static_cast<T*>(nullptr)->*Member));
  return reinterpret_cast<T*>(reinterpret_cast<char*>(p) - off);
}

}  // namespace uslub
