// Per-generation state: the ggml CPU backend, and the compute graph and its
// buffers, planned once per input shape and reused across steps.
#pragma once

#include "model.h"
#include "unet.h"

#include <memory>
#include <string>
#include <vector>

struct ggml_backend;
struct ggml_gallocr;
struct ggml_cgraph;

struct cutecpp_context {
    cutecpp_context(const cutecpp_model & model, int n_threads);
    ~cutecpp_context();
    cutecpp_context(const cutecpp_context &) = delete;
    cutecpp_context & operator=(const cutecpp_context &) = delete;

    // sample [n, C_in, h, w], timesteps [n], context [n, t, D] -> out [n, C_out, h, w] (C order).
    void unet_eval(const float * sample, int n, int h, int w, const float * timesteps, const float * context, int t,
                   float * out);

    // Keep each block's output of the next evaluations for trace_get().
    void set_trace(bool enable);
    // Copies a traced block output (C order [n, C, H, W]); returns its element
    // count, or fails naming the known blocks.
    size_t trace_get(const std::string & name, float * out, size_t capacity, int64_t shape[4]) const;

    const cutecpp_model & model;
    const int n_threads;

private:
    struct Shape {
        int n = 0, h = 0, w = 0, t = 0;
        bool trace = false;
        bool operator==(const Shape & o) const {
            return n == o.n && h == o.h && w == o.w && t == o.t && trace == o.trace;
        }
    };
    void plan_unet(const Shape & shape);

    ggml_backend * backend_ = nullptr;
    ggml_gallocr * galloc_ = nullptr;
    ggml_context * graph_ctx_ = nullptr;
    ggml_cgraph * graph_ = nullptr;
    Shape shape_;
    cutecpp::UnetInputs inputs_{};
    ggml_tensor * output_ = nullptr;
    std::vector<ggml_tensor *> blocks_;
    bool trace_ = false;
    bool traced_ = false;  // the last evaluation kept its block outputs
};
