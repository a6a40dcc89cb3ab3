#include "model.h"

#include "direct_conv.h"
#include "error.h"
#include "gemm.h"
#include "gemm_q8.h"
#include "json.h"
#include "pointwise_conv.h"
#include "winograd.h"

#include "ggml.h"

#include <vector>

namespace cutecpp {

namespace {

// The tensor dtypes a bundle may use; 1-D tensors (norms, biases) must be F32.
bool dtype_allowed(int type) {
    switch (type) {
        case GGML_TYPE_F32:
        case GGML_TYPE_F16:
        case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q4_0:
            return true;
        default:
            return false;
    }
}

std::string shape_str(const Shape & s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

// Torch-order shape of a ggml tensor, trailing (outer) 1s dropped.
Shape torch_shape(const ggml_tensor * t) {
    Shape s;
    for (int d = ggml_n_dims(t) - 1; d >= 0; --d) s.push_back(t->ne[d]);
    return s;
}

Shape squeeze_outer(Shape s) {
    while (s.size() > 1 && s.front() == 1) s.erase(s.begin());
    return s;
}

std::string describe(const GGUFFile & file, const BundleConfig & config) {
    struct DtypeUse {
        int64_t tensors = 0;
        uint64_t bytes = 0;
    };
    std::map<std::string, DtypeUse> by_type;
    int64_t params = 0;
    for (int64_t i = 0; i < file.n_tensors(); ++i) {
        const ggml_tensor * t = file.tensor(i);
        DtypeUse & u = by_type[ggml_type_name(t->type)];
        u.tensors += 1;
        u.bytes += file.tensor_bytes(i);
        params += ggml_nelements(t);
    }
    std::vector<std::pair<std::string, std::string>> dtypes;
    for (const auto & [name, u] : by_type) {
        dtypes.emplace_back(name, json::object({{"tensors", std::to_string(u.tensors)},
                                                {"bytes", std::to_string(u.bytes)}}));
    }
    return json::object({
        {"path", json::str(file.path())},
        {"file_size", std::to_string(file.file_size())},
        {"gguf_version", std::to_string(file.version())},
        {"mmap", file.mapped() ? "true" : "false"},
        {"n_tensors", std::to_string(file.n_tensors())},
        {"n_params", std::to_string(params)},
        {"dtypes", json::object(dtypes)},
        {"config", config_json(config)},
    });
}

}  // namespace
}  // namespace cutecpp

using namespace cutecpp;

cutecpp_model::cutecpp_model(const std::string & path, bool use_mmap)
    : file(path, use_mmap), config(read_config(file)) {
    const TensorShapes expected = expected_tensors(config);
    for (int64_t i = 0; i < file.n_tensors(); ++i) {
        ggml_tensor * t = file.tensor(i);
        const std::string name = ggml_get_name(t);
        const auto it = expected.find(name);
        if (it == expected.end()) fail(CUTECPP_ERR_MODEL, "unexpected tensor '" + name + "': the config implies no such tensor");
        if (!dtype_allowed(t->type)) {
            fail(CUTECPP_ERR_UNSUPPORTED, "tensor '" + name + "' has dtype " + ggml_type_name(t->type) +
                                              " (supported: f32, f16, q8_0, q4_0)");
        }
        const Shape got = torch_shape(t);
        if (squeeze_outer(got) != squeeze_outer(it->second)) {
            fail(CUTECPP_ERR_MODEL, "tensor '" + name + "' has shape " + shape_str(got) + ", the config implies " +
                                        shape_str(it->second));
        }
        if (it->second.size() == 1 && t->type != GGML_TYPE_F32) {
            fail(CUTECPP_ERR_UNSUPPORTED, "tensor '" + name + "' is 1-D (a norm or bias) and must be f32, not " +
                                              ggml_type_name(t->type));
        }
        tensors.emplace(name, t);
        // A quantized bundle (the converter quantizes every matrix whose rows fit the blocks): its
        // Winograd kernels are quantized too, to the lowest precision it uses.
        if (t->type == GGML_TYPE_Q4_0 || (t->type == GGML_TYPE_Q8_0 && winograd_quantized_ != GGML_TYPE_Q4_0)) {
            winograd_quantized_ = t->type;
        }
    }
    for (const auto & [name, shape] : expected) {
        if (tensors.count(name) == 0) {
            fail(CUTECPP_ERR_MODEL, "missing tensor '" + name + "' " + shape_str(shape) + " (" +
                                        std::to_string(expected.size() - tensors.size()) + " of " +
                                        std::to_string(expected.size()) + " expected tensors missing)");
        }
    }
    info_json = describe(file, config);
}

cutecpp_model::~cutecpp_model() {
    for (auto & [name, t] : transformed_) ggml_free(t.ctx);
}

ggml_tensor * cutecpp_model::winograd_kernel(const std::string & name) const { return transformed(name, Kind::winograd); }

ggml_tensor * cutecpp_model::direct_kernel(const std::string & name) const { return transformed(name, Kind::direct); }

ggml_tensor * cutecpp_model::panel_weight(const std::string & name) const { return transformed(name, Kind::panels); }

ggml_tensor * cutecpp_model::pointwise_kernel(const std::string & name) const {
    return transformed(name, Kind::pointwise);
}

ggml_tensor * cutecpp_model::im2col_panels(const std::string & name) const { return transformed(name, Kind::im2col); }

bool cutecpp_model::int8_panels(const ggml_tensor * w) const {
    // q8_0 weights, and in a q8_0 bundle the f32 / f16 conv kernels the file could not quantize
    // (callers ask for 1x1 kernels as panels or rows, 3x3 ones for im2col products)
    return gemm_q8::supports_weight(w) ||
           (winograd_quantized_ == GGML_TYPE_Q8_0 && gemm_q8::supports_float_weight(w));
}

int cutecpp_model::winograd_type(const ggml_tensor * kernel) const {
    return winograd::transformed_type(kernel, winograd_quantized_);
}

ggml_tensor * cutecpp_model::transformed(const std::string & name, Kind kind) const {
    static const char * const kPrefix[] = {"winograd:", "direct:", "panels:", "pointwise:", "im2col:"};
    const auto it = tensors.find(name);
    if (it == tensors.end()) return nullptr;
    const ggml_tensor * k = it->second;
    const bool supported = kind == Kind::winograd ? winograd::supports_kernel(k)
                           : kind == Kind::direct ? direct_conv::supports_kernel(k)
                           : kind == Kind::panels ? gemm::supports_weight(k) || int8_panels(k)
                           : kind == Kind::im2col ? winograd::supports_kernel(k) && int8_panels(k)
                                                  : pointwise_conv::supports_kernel(k);
    if (!supported) return nullptr;
    std::lock_guard<std::mutex> lock(transformed_mutex_);
    Transformed & t = transformed_[kPrefix[static_cast<int>(kind)] + name];
    if (t.ctx == nullptr) {
        int64_t ne[4];
        ggml_type type = GGML_TYPE_F32;
        if (kind == Kind::direct) {
            direct_conv::arranged_shape(k, ne);
            t.data.resize(ne[0] * ne[1] * ne[2] * ne[3]);
            direct_conv::arrange_kernel(k, t.data.data());
        } else if (kind == Kind::pointwise && int8_panels(k)) {
            gemm_q8::pointwise_shape(k, ne);
            type = GGML_TYPE_I8;
            t.data.resize((ne[0] * ne[1] + sizeof(float) - 1) / sizeof(float));
            gemm_q8::pointwise_arrange(k, t.data.data());
        } else if (kind == Kind::pointwise) {
            pointwise_conv::arranged_shape(k, ne);
            t.data.resize(ne[0] * ne[1] * ne[2] * ne[3]);
            pointwise_conv::arrange_kernel(k, t.data.data());
        } else if ((kind == Kind::panels && int8_panels(k)) || kind == Kind::im2col) {
            const int64_t kk = gemm_q8::weight_k(k), oc = gemm_q8::weight_oc(k);
            gemm_q8::panel_shape(kk, oc, ne);
            type = GGML_TYPE_I8;
            t.data.resize((gemm_q8::panel_bytes(kk, oc) + sizeof(float) - 1) / sizeof(float));
            gemm_q8::pack(k, t.data.data());
        } else if (kind == Kind::panels) {
            gemm::panel_shape(k, ne);
            type = k->type;
            t.data.resize((gemm::panel_bytes(k) + sizeof(float) - 1) / sizeof(float));
            gemm::pack(k, t.data.data());
        } else {
            type = static_cast<ggml_type>(winograd::transformed_type(k, winograd_quantized_));
            winograd::transformed_shape(k, type, ne);
            const size_t bytes = winograd::transformed_bytes(k, type);
            t.data.resize((bytes + sizeof(float) - 1) / sizeof(float));
            winograd::transform_kernel(k, type, t.data.data());
        }
        file.release(k);  // the graph reads only the transformed copy from now on
        ggml_init_params params = {ggml_tensor_overhead(), nullptr, true};
        t.ctx = ggml_init(params);
        if (!t.ctx) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot allocate a transformed kernel");
        ggml_tensor * u = ggml_new_tensor_4d(t.ctx, type, ne[0], ne[1], ne[2], ne[3]);
        u->data = t.data.data();
    }
    return ggml_get_first_tensor(t.ctx);
}
