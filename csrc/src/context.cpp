#include "context.h"

#include "error.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

using namespace cutecpp;

namespace {
constexpr size_t kMaxGraphNodes = 16384;
}

cutecpp_context::cutecpp_context(const cutecpp_model & m, int threads) : model(m), n_threads(threads) {
    backend_ = ggml_backend_cpu_init();
    if (!backend_) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot start the ggml CPU backend");
    ggml_backend_cpu_set_n_threads(backend_, n_threads);
    galloc_ = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_));
    if (!galloc_) {
        ggml_backend_free(backend_);
        fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot create the compute allocator");
    }
}

cutecpp_context::~cutecpp_context() {
    if (graph_ctx_) ggml_free(graph_ctx_);
    ggml_gallocr_free(galloc_);
    ggml_backend_free(backend_);
}

void cutecpp_context::plan_unet(const Shape & s) {
    if (graph_ && shape_ == s) return;
    if (graph_ctx_) ggml_free(graph_ctx_);
    graph_ctx_ = nullptr;
    graph_ = nullptr;

    const UnetConfig & c = *model.config.unet;
    ggml_init_params params = {
        /*mem_size =*/ggml_tensor_overhead() * kMaxGraphNodes + ggml_graph_overhead_custom(kMaxGraphNodes, false),
        /*mem_buffer =*/nullptr, /*no_alloc =*/true};
    graph_ctx_ = ggml_init(params);
    if (!graph_ctx_) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot allocate the graph context");

    inputs_.sample = ggml_new_tensor_4d(graph_ctx_, GGML_TYPE_F32, s.w, s.h, c.in_channels, s.n);
    inputs_.time_proj = ggml_new_tensor_2d(graph_ctx_, GGML_TYPE_F32, c.block_out_channels[0], s.n);
    inputs_.context = ggml_new_tensor_3d(graph_ctx_, GGML_TYPE_F32, c.cross_attention_dim, s.t, s.n);
    for (ggml_tensor * t : {inputs_.sample, inputs_.time_proj, inputs_.context}) ggml_set_input(t);

    blocks_.clear();
    output_ = build_unet(graph_ctx_, model, inputs_, blocks_);
    ggml_set_output(output_);
    if (s.trace) {
        for (ggml_tensor * b : blocks_) ggml_set_output(b);  // the allocator keeps outputs alive
    }
    graph_ = ggml_new_graph_custom(graph_ctx_, kMaxGraphNodes, false);
    ggml_build_forward_expand(graph_, output_);
    if (!ggml_gallocr_reserve(galloc_, graph_)) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot allocate compute buffers");
    shape_ = s;
}

void cutecpp_context::unet_eval(const float * sample, int n, int h, int w, const float * timesteps,
                                const float * context, int t, float * out) {
    if (!model.config.unet) fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no unet component");
    const UnetConfig & c = *model.config.unet;
    const int factor = 1 << (c.block_out_channels.size() - 1);
    if (n < 1 || n > 64) fail(CUTECPP_ERR_INVALID_ARGUMENT, "batch size must be 1 to 64");
    if (h < 1 || w < 1 || h > 1024 || w > 1024 || h % factor || w % factor) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "latent height and width must be 1 to 1024 and multiples of " +
                                               std::to_string(factor) + ", got " + std::to_string(h) + "x" +
                                               std::to_string(w));
    }
    if (t < 1 || t > 1024) fail(CUTECPP_ERR_INVALID_ARGUMENT, "context must have 1 to 1024 tokens");

    traced_ = false;
    plan_unet({n, h, w, t, trace_});
    if (!ggml_gallocr_alloc_graph(galloc_, graph_)) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot allocate the graph");
    const std::vector<float> tproj = timestep_embedding(c, timesteps, n);
    ggml_backend_tensor_set(inputs_.sample, sample, 0, ggml_nbytes(inputs_.sample));
    ggml_backend_tensor_set(inputs_.time_proj, tproj.data(), 0, ggml_nbytes(inputs_.time_proj));
    ggml_backend_tensor_set(inputs_.context, context, 0, ggml_nbytes(inputs_.context));
    if (ggml_backend_graph_compute(backend_, graph_) != GGML_STATUS_SUCCESS) {
        fail(CUTECPP_ERR_INTERNAL, "ggml graph computation failed");
    }
    ggml_backend_tensor_get(output_, out, 0, ggml_nbytes(output_));
    traced_ = trace_;
}

void cutecpp_context::set_trace(bool enable) { trace_ = enable; }

size_t cutecpp_context::trace_get(const std::string & name, float * out, size_t capacity, int64_t shape[4]) const {
    if (!traced_) fail(CUTECPP_ERR_INVALID_ARGUMENT, "no traced evaluation: enable tracing, then evaluate");
    std::string known;
    for (ggml_tensor * b : blocks_) {
        if (name == ggml_get_name(b)) {
            const size_t count = static_cast<size_t>(ggml_nelements(b));
            for (int d = 0; d < 4; ++d) shape[d] = b->ne[3 - d];
            if (out == nullptr) return count;
            if (capacity < count) fail(CUTECPP_ERR_INVALID_ARGUMENT, "trace buffer too small for " + name);
            ggml_backend_tensor_get(b, out, 0, count * sizeof(float));
            return count;
        }
        known += (known.empty() ? "" : ", ") + std::string(ggml_get_name(b));
    }
    fail(CUTECPP_ERR_INVALID_ARGUMENT, "no traced block '" + name + "' (traced: " + known + ")");
}
