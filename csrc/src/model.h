// A loaded, validated model bundle. Immutable after load.
#pragma once

#include "config.h"
#include "gguf_file.h"

#include <map>
#include <string>

struct ggml_tensor;

struct cutecpp_model {
    cutecpp_model(const std::string & path, bool use_mmap);

    cutecpp::GGUFFile file;
    cutecpp::BundleConfig config;
    std::map<std::string, ggml_tensor *> tensors;
    std::string info_json;
};
