// The USLUB_* environment check and USLUB_VERBOSE (options.cpp; the table: options_table.hpp).
#pragma once

namespace uslub {

// 1, yes, true, on (any case).
bool option_true(const char* v);
// Every option's value in effect, one line each, through report_info.
void print_settings();

}  // namespace uslub
