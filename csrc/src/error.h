// Internal error type and the guard that keeps exceptions inside the library.
#pragma once

#include "cutecpp.h"

#include <new>
#include <stdexcept>
#include <string>

namespace cutecpp {

// Thrown anywhere inside the core; caught at the C boundary by guard().
class Error : public std::runtime_error {
public:
    Error(cutecpp_status status, const std::string & message)
        : std::runtime_error(message), status_(status) {}
    cutecpp_status status() const { return status_; }

private:
    cutecpp_status status_;
};

[[noreturn]] void fail(cutecpp_status status, const std::string & message);

void set_last_error(const std::string & message);
void clear_last_error();
const char * last_error();  // this thread's message, "" if none

// Runs fn() and turns any exception into a status plus the thread's message.
template <typename Fn>
cutecpp_status guard(Fn && fn) noexcept {
    try {
        clear_last_error();
        fn();
        return CUTECPP_OK;
    } catch (const Error & e) {
        set_last_error(e.what());
        return e.status();
    } catch (const std::bad_alloc &) {
        set_last_error("out of memory");
        return CUTECPP_ERR_OUT_OF_MEMORY;
    } catch (const std::exception & e) {
        set_last_error(std::string("internal error: ") + e.what());
        return CUTECPP_ERR_INTERNAL;
    } catch (...) {
        set_last_error("internal error: unknown exception");
        return CUTECPP_ERR_INTERNAL;
    }
}

}  // namespace cutecpp
