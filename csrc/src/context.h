// Per-generation state: the ggml CPU backend, and the compute graph and its
// buffers, planned once per input shape and reused across steps.
#pragma once

#include "model.h"
#include "unet.h"

#include <memory>

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

    const cutecpp_model & model;
    const int n_threads;

private:
    struct Shape {
        int n = 0, h = 0, w = 0, t = 0;
        bool operator==(const Shape & o) const { return n == o.n && h == o.h && w == o.w && t == o.t; }
    };
    void plan_unet(const Shape & shape);

    ggml_backend * backend_ = nullptr;
    ggml_gallocr * galloc_ = nullptr;
    ggml_context * graph_ctx_ = nullptr;
    ggml_cgraph * graph_ = nullptr;
    Shape shape_;
    cutecpp::UnetInputs inputs_{};
    ggml_tensor * output_ = nullptr;
};
