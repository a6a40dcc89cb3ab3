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

// The panel products' work split (gemm.h, gemm_q8.h): items of one batch, one
// block of outputs and one chunk of `chunk` rows of [0, n), block-major so that a
// thread's items share blocks; f(batch, block, r0, r1) for this thread's items.
template <class F>
void for_each_item(int64_t batches, int64_t blocks, int64_t n, int64_t chunk, int ith, int nth, F && f) {
    const int64_t chunks = (n + chunk - 1) / chunk;
    int64_t i0, i1;
    share(batches * blocks * chunks, ith, nth, i0, i1);
    for (int64_t item = i0; item < i1; ++item) {
        const int64_t r0 = (item % chunks) * chunk;
        f(item / (blocks * chunks), item / chunks % blocks, r0, std::min(n, r0 + chunk));
    }
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
