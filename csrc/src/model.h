// A loaded, validated model bundle. Immutable after load.
#pragma once

#include "config.h"
#include "gguf_file.h"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct ggml_tensor;

struct cutecpp_model {
    cutecpp_model(const std::string & path, bool use_mmap);
    ~cutecpp_model();

    // The Winograd-transformed copy of a 3x3 conv kernel (winograd.h), made on
    // first use and kept for the model's lifetime; NULL if the kernel's type
    // or shape does not allow it. Its type: the kernel's (f32 or f16), or, in a
    // bundle with q8_0 / q4_0 tensors, the lowest of those (winograd.h says why).
    // Thread-safe: the model stays shareable.
    ggml_tensor * winograd_kernel(const std::string & name) const;
    // The same for the direct convolution's arrangement (direct_conv.h).
    ggml_tensor * direct_kernel(const std::string & name) const;
    // The same for a Linear's (or 1x1 conv's) weight packed into panels: gemm.h's
    // (f32 / f16), or gemm_q8.h's (GGML_TYPE_I8) where int8_panels says so.
    ggml_tensor * panel_weight(const std::string & name) const;
    // The same for a 1x1 conv's arrangement (pointwise_conv.h; gemm_q8.h's
    // quantized rows, GGML_TYPE_I8, where int8_panels says so).
    ggml_tensor * pointwise_kernel(const std::string & name) const;
    // The same for a 3x3 kernel as gemm_q8.h panels of its [9 * IC, OC] matrix (an
    // im2col product), in a q8_0 bundle on a CPU with int8 products; else NULL.
    ggml_tensor * im2col_panels(const std::string & name) const;
    // Whether panel_weight packs this weight for the int8 products: q8_0 weights,
    // and in a q8_0 bundle its f32 / f16 1x1 kernels (quantized like its Winograd U).
    bool int8_panels(const ggml_tensor * w) const;
    // The type winograd_kernel gives this kernel (before making it).
    int winograd_type(const ggml_tensor * kernel) const;

    cutecpp::GGUFFile file;
    cutecpp::BundleConfig config;
    std::map<std::string, ggml_tensor *> tensors;
    std::string info_json;

private:
    struct Transformed {
        ggml_context * ctx = nullptr;  // holds the tensor's metadata
        std::vector<float> data;
    };
    enum class Kind { winograd, direct, panels, pointwise, im2col };
    // winograd_kernel, direct_kernel, panel_weight or pointwise_kernel; kept by kind and name.
    ggml_tensor * transformed(const std::string & name, Kind kind) const;
    int winograd_quantized_ = -1;  // a ggml_type (Q8_0 / Q4_0), or -1 for none
    mutable std::mutex transformed_mutex_;
    mutable std::map<std::string, Transformed> transformed_;
};
