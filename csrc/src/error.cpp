#include "error.h"

namespace cutecpp {

namespace {
thread_local std::string g_last_error;
}

void fail(cutecpp_status status, const std::string & message) {
    throw Error(status, message);
}

void set_last_error(const std::string & message) {
    try {
        g_last_error = message;
    } catch (...) {
        // Out of memory while storing the message: keep the old one.
    }
}

void clear_last_error() { g_last_error.clear(); }

const char * last_error() { return g_last_error.c_str(); }

}  // namespace cutecpp
