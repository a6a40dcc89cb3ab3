// Helpers shared by the ggml custom ops (winograd, direct_conv, fused, attention).
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <mutex>

namespace cutecpp::custom_op {

// Splits [0, n) evenly between nth threads: thread ith takes [begin, end).
inline void share(int64_t n, int ith, int nth, int64_t & begin, int64_t & end) {
    const int64_t per = (n + nth - 1) / nth;
    begin = std::min<int64_t>(n, per * ith);
    end = std::min<int64_t>(n, begin + per);
}

// ggml keeps an op's userdata pointer for the graph's lifetime: one stable
// entry per distinct value, shared by every graph of the process.
template <class T>
const T * intern(const T & value) {
    static std::mutex mutex;
    static std::deque<T> table;
    std::lock_guard<std::mutex> lock(mutex);
    for (const T & t : table) {
        if (t == value) return &t;
    }
    table.push_back(value);
    return &table.back();
}

}  // namespace cutecpp::custom_op
