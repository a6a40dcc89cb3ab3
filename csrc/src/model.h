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
    // or shape does not allow it. Thread-safe: the model stays shareable.
    ggml_tensor * winograd_kernel(const std::string & name) const;
    // The same for the direct convolution's arrangement (direct_conv.h).
    ggml_tensor * direct_kernel(const std::string & name) const;

    cutecpp::GGUFFile file;
    cutecpp::BundleConfig config;
    std::map<std::string, ggml_tensor *> tensors;
    std::string info_json;

private:
    struct Transformed {
        ggml_context * ctx = nullptr;  // holds the tensor's metadata
        std::vector<float> data;
    };
    // winograd_kernel (direct = false) or direct_kernel; kept by kind and name.
    ggml_tensor * transformed(const std::string & name, bool direct) const;
    mutable std::mutex transformed_mutex_;
    mutable std::map<std::string, Transformed> transformed_;
};
