// A loaded, validated model bundle. Immutable after load.
#pragma once

#include "config.h"
#include "gguf_file.h"

#include <map>
#include <memory>
#include <string>

struct ggml_tensor;

struct cutecpp_model {
    cutecpp_model(const std::string & path, bool use_mmap);

    // Returns the tensor or fails naming it (bundles are validated at load,
    // so this only fails on a bug).
    ggml_tensor * get(const std::string & name) const;

    cutecpp::GGUFFile file;
    cutecpp::BundleConfig config;
    std::map<std::string, ggml_tensor *> tensors;
    std::string info_json;
};

namespace cutecpp {
// The tensor dtypes a bundle may use; 1-D tensors (norms, biases) must be F32.
bool dtype_allowed(int ggml_type);
}  // namespace cutecpp
