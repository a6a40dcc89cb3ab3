#include "context.h"

#include "alignment.h"
#include "error.h"
#include "tiny_decoder.h"
#include "tiny_encoder.h"
#include "unet.h"
#include "vae_decoder.h"
#include "vae_encoder.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <map>

using namespace cutecpp;

namespace {

constexpr size_t kMaxGraphNodes = 16384;
constexpr int kMaxBatch = 64;
constexpr int kMaxAlignTokens = 4096;
constexpr int kMaxImageSide = 4096;  // pixels: an encoder's input, as a decoder's output

void check_batch(int n) {
    if (n < 1 || n > kMaxBatch) fail(CUTECPP_ERR_INVALID_ARGUMENT, "batch size must be 1 to " + std::to_string(kMaxBatch));
}

void check_batch_and_side(int n, int h, int w, int multiple) {
    check_batch(n);
    if (h < 1 || w < 1 || h > 1024 || w > 1024 || h % multiple || w % multiple) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "latent height and width must be 1 to 1024 and multiples of " +
                                               std::to_string(multiple) + ", got " + std::to_string(h) + "x" +
                                               std::to_string(w));
    }
}

}  // namespace

cutecpp_context::cutecpp_context(const cutecpp_model & m, int threads) : model(m), n_threads(threads) {
    backend_ = ggml_backend_cpu_init();
    if (!backend_) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot start the ggml CPU backend");
    ggml_backend_cpu_set_n_threads(backend_, n_threads);
    const char * profile = std::getenv("CUTECPP_PROFILE");
    profile_ = profile != nullptr ? std::atoi(profile) : 0;
}

cutecpp_context::~cutecpp_context() {
    release(unet_[0]);
    release(unet_[1]);
    release(tiny_);
    release(vae_);
    release(tiny_encoder_);
    release(vae_encoder_);
    release(align_);
    release(verifier_);
    ggml_backend_free(backend_);
}

void cutecpp_context::release(Planned & p) {
    if (p.ctx) ggml_free(p.ctx);
    if (p.galloc) ggml_gallocr_free(p.galloc);
    p = Planned{};
}

void cutecpp_context::plan(Planned & p, std::vector<int64_t> key, const Builder & build) {
    key.push_back(trace_);
    if (p.graph && p.key == key) return;
    if (p.ctx) ggml_free(p.ctx);
    p.ctx = nullptr;
    p.graph = nullptr;
    p.inputs.clear();
    p.blocks.clear();
    if (!p.galloc) p.galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_));
    if (!p.galloc) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot create the compute allocator");

    ggml_init_params params = {
        /*mem_size =*/ggml_tensor_overhead() * kMaxGraphNodes + ggml_graph_overhead_custom(kMaxGraphNodes, false),
        /*mem_buffer =*/nullptr, /*no_alloc =*/true};
    p.ctx = ggml_init(params);
    if (!p.ctx) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot allocate the graph context");
    p.output = build(p.ctx, p.inputs, p.blocks);
    for (ggml_tensor * t : p.inputs) ggml_set_input(t);
    ggml_set_output(p.output);
    if (trace_) {
        for (ggml_tensor * b : p.blocks) ggml_set_output(b);  // the allocator keeps outputs alive
    }
    p.graph = ggml_new_graph_custom(p.ctx, kMaxGraphNodes, false);
    ggml_build_forward_expand(p.graph, p.output);
    if (!ggml_gallocr_reserve(p.galloc, p.graph)) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot allocate compute buffers");
    if (profile_) {
        std::fprintf(stderr, "cutecpp plan: %d nodes, compute buffer %.1f MiB\n", ggml_graph_n_nodes(p.graph),
                     ggml_gallocr_get_buffer_size(p.galloc, 0) / 1048576.0);
    }
    p.key = std::move(key);
}

void cutecpp_context::run(Planned & p, const std::vector<const float *> & inputs, float * out) {
    last_ = nullptr;
    if (!ggml_gallocr_alloc_graph(p.galloc, p.graph)) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot allocate the graph");
    for (size_t i = 0; i < inputs.size(); ++i) {
        ggml_backend_tensor_set(p.inputs[i], inputs[i], 0, ggml_nbytes(p.inputs[i]));
    }
    if (profile_) {
        profile(p);
    } else if (ggml_backend_graph_compute(backend_, p.graph) != GGML_STATUS_SUCCESS) {
        fail(CUTECPP_ERR_INTERNAL, "ggml graph computation failed");
    }
    ggml_backend_tensor_get(p.output, out, 0, ggml_nbytes(p.output));
    if (trace_) last_ = &p;
}

// CUTECPP_PROFILE=1: computes the graph one node at a time and prints the time
// per op (and per op and shape for the costliest) to stderr. Slower overall
// than a normal run; the shares are what it is for.
void cutecpp_context::profile(Planned & p) {
    struct Cost {
        double ms = 0;
        int count = 0;
    };
    std::map<std::string, Cost> by_op;
    double total = 0;
    const int n = ggml_graph_n_nodes(p.graph);
    ggml_init_params params = {ggml_graph_overhead_custom(1, false), nullptr, true};
    ggml_context * one_ctx = ggml_init(params);
    if (!one_ctx) fail(CUTECPP_ERR_OUT_OF_MEMORY, "profile: cannot allocate a graph");
    ggml_cgraph * one = ggml_new_graph_custom(one_ctx, 1, false);
    for (int i = 0; i < n; ++i) {
        ggml_graph_clear(one);
        ggml_graph_add_node(one, ggml_graph_node(p.graph, i));
        const auto start = std::chrono::steady_clock::now();
        if (ggml_backend_graph_compute(backend_, one) != GGML_STATUS_SUCCESS) {
            ggml_free(one_ctx);
            fail(CUTECPP_ERR_INTERNAL, "ggml graph computation failed");
        }
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        const ggml_tensor * t = ggml_graph_node(p.graph, i);
        std::string op = ggml_op_desc(t);
        if (t->op == GGML_OP_CUSTOM && t->name[0]) op += std::string(" ") + t->name;
        if (t->op == GGML_OP_CUSTOM && profile_ > 1) {  // CUTECPP_PROFILE=2: input and output shapes
            char dims[96];
            std::snprintf(dims, sizeof(dims), " [%lld,%lld,%lld]->[%lld,%lld,%lld]", (long long)t->src[0]->ne[0],
                          (long long)t->src[0]->ne[1], (long long)t->src[0]->ne[2], (long long)t->ne[0],
                          (long long)t->ne[1], (long long)t->ne[2]);
            op += dims;
        }
        if (t->op == GGML_OP_MUL_MAT) {
            op += std::string(" ") + ggml_type_name(t->src[0]->type);
            if (profile_ > 1) {  // CUTECPP_PROFILE=2: by operand shape too
                char dims[96];
                std::snprintf(dims, sizeof(dims), " [%lld,%lld,%lld]x[%lld,%lld,%lld]", (long long)t->src[0]->ne[0],
                              (long long)t->src[0]->ne[1], (long long)t->src[0]->ne[2], (long long)t->src[1]->ne[0],
                              (long long)t->src[1]->ne[1], (long long)t->src[1]->ne[2]);
                op += dims;
            }
        }
        by_op[op].ms += ms;
        by_op[op].count += 1;
        total += ms;
    }
    ggml_free(one_ctx);
    std::vector<std::pair<std::string, Cost>> rows(by_op.begin(), by_op.end());
    std::sort(rows.begin(), rows.end(), [](const auto & a, const auto & b) { return a.second.ms > b.second.ms; });
    std::fprintf(stderr, "cutecpp profile: %d nodes, %.2f ms\n", n, total);
    for (const auto & [op, cost] : rows) {
        std::fprintf(stderr, "  %-44s %5d nodes %9.2f ms %5.1f%%\n", op.c_str(), cost.count, cost.ms, 100.0 * cost.ms / total);
    }
}

void cutecpp_context::unet_eval(const float * sample, int n, int h, int w, const float * timesteps,
                                const float * context, int t, float * out) {
    if (!model.config.unet) fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no unet component");
    const UnetConfig & c = *model.config.unet;
    check_batch_and_side(n, h, w, 1 << (c.block_out_channels.size() - 1));
    if (t < 1 || t > 1024) fail(CUTECPP_ERR_INVALID_ARGUMENT, "context must have 1 to 1024 tokens");

    const std::vector<int64_t> key = {n, h, w, t, trace_};
    const int slot = unet_[0].graph && unet_[0].key == key   ? 0
                     : unet_[1].graph && unet_[1].key == key ? 1
                                                             : 1 - unet_recent_;
    unet_recent_ = slot;
    Planned & unet = unet_[slot];
    plan(unet, {n, h, w, t}, [&](ggml_context * ctx, std::vector<ggml_tensor *> & in, std::vector<ggml_tensor *> & blocks) {
        const UnetInputs inputs = {
            ggml_new_tensor_4d(ctx, GGML_TYPE_F32, w, h, c.in_channels, n),
            ggml_new_tensor_2d(ctx, GGML_TYPE_F32, c.block_out_channels[0], n),
            ggml_new_tensor_3d(ctx, GGML_TYPE_F32, c.cross_attention_dim, t, n),
        };
        in = {inputs.sample, inputs.time_proj, inputs.context};
        return build_unet(ctx, model, inputs, blocks);
    });
    const std::vector<float> tproj = timestep_embedding(c, timesteps, n);
    run(unet, {sample, tproj.data(), context}, out);
}

void cutecpp_context::decode(Planned & p, DecoderBuild build, const LatentScaling & scaling, uint32_t latent_channels,
                             uint32_t upscale, const float * latents, int n, int h, int w, float * out) {
    check_batch_and_side(n, h, w, 1);
    if (static_cast<int64_t>(h) * upscale > kMaxImageSide || static_cast<int64_t>(w) * upscale > kMaxImageSide) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "decoded image would exceed " + std::to_string(kMaxImageSide) + " pixels per side");
    }
    plan(p, {n, h, w}, [&](ggml_context * ctx, std::vector<ggml_tensor *> & in, std::vector<ggml_tensor *> & blocks) {
        in = {ggml_new_tensor_4d(ctx, GGML_TYPE_F32, w, h, latent_channels, n)};
        return build(ctx, model, in[0], blocks);
    });
    std::vector<float> unscaled(static_cast<size_t>(n) * latent_channels * h * w);
    scaling.unscale(latents, unscaled.data(), n, latent_channels, static_cast<int64_t>(h) * w);
    run(p, {unscaled.data()}, out);
}

void cutecpp_context::tiny_decode(const float * latents, int n, int h, int w, float * out) {
    if (!model.config.tiny_decoder) fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no tiny_decoder component");
    const TinyDecoderConfig & c = *model.config.tiny_decoder;
    decode(tiny_, build_tiny_decoder, c.scaling, c.latent_channels, c.upscale(), latents, n, h, w, out);
}

void cutecpp_context::vae_decode(const float * latents, int n, int h, int w, float * out) {
    if (!model.config.vae_decoder) fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no vae_decoder component");
    const VaeDecoderConfig & c = *model.config.vae_decoder;
    decode(vae_, build_vae_decoder, c.scaling, c.latent_channels, c.upscale(), latents, n, h, w, out);
}

void cutecpp_context::encode(Planned & p, DecoderBuild build, const LatentScaling & scaling, uint32_t in_channels,
                             uint32_t latent_channels, uint32_t downscale, const float * image, int n, int h, int w,
                             float * out) {
    check_batch(n);
    const int f = static_cast<int>(downscale);
    if (h < f || w < f || h > kMaxImageSide || w > kMaxImageSide || h % f || w % f) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "image height and width must be multiples of " + std::to_string(f) +
                                               " (the encoder's downscaling) from " + std::to_string(f) + " to " +
                                               std::to_string(kMaxImageSide) + ", got " + std::to_string(h) + "x" +
                                               std::to_string(w));
    }
    plan(p, {n, h, w}, [&](ggml_context * ctx, std::vector<ggml_tensor *> & in, std::vector<ggml_tensor *> & blocks) {
        in = {ggml_new_tensor_4d(ctx, GGML_TYPE_F32, w, h, in_channels, n)};
        return build(ctx, model, in[0], blocks);
    });
    run(p, {image}, out);
    scaling.scale(out, out, n, latent_channels, static_cast<int64_t>(h / f) * (w / f));
}

void cutecpp_context::tiny_encode(const float * image, int n, int h, int w, float * out) {
    if (!model.config.tiny_encoder) fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no tiny_encoder component");
    const TinyEncoderConfig & c = *model.config.tiny_encoder;
    encode(tiny_encoder_, build_tiny_encoder, c.scaling, c.in_channels, c.latent_channels, c.downscale(), image, n, h,
           w, out);
}

void cutecpp_context::vae_encode(const float * image, int n, int h, int w, float * out) {
    if (!model.config.vae_encoder) fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no vae_encoder component");
    const VaeEncoderConfig & c = *model.config.vae_encoder;
    encode(vae_encoder_, build_vae_encoder, c.scaling, c.in_channels, c.latent_channels, c.downscale(), image, n, h,
           w, out);
}

void cutecpp_context::align(const float * states, int n, int t, float * out) {
    if (!model.config.alignment) fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no alignment component");
    const AlignmentConfig & c = *model.config.alignment;
    check_batch(n);
    if (t < 1 || t > kMaxAlignTokens) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "states must have 1 to " + std::to_string(kMaxAlignTokens) + " tokens, got " +
                                               std::to_string(t));
    }
    plan(align_, {n, t}, [&](ggml_context * ctx, std::vector<ggml_tensor *> & in, std::vector<ggml_tensor *> & blocks) {
        in = {ggml_new_tensor_3d(ctx, GGML_TYPE_F32, c.in_dim, t, n)};
        return build_alignment(ctx, model, in[0], blocks);
    });
    run(align_, {states}, out);
}

void cutecpp_context::verify(const float * latents, const float * sigmas, int n, int h, int w, float * out) {
    if (!model.config.verifier) fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no verifier component");
    const VerifierConfig & c = *model.config.verifier;
    check_batch_and_side(n, h, w, static_cast<int>(c.body.downscale()));
    // The input as the verifier was trained on it: the latent's channels, then one filled with its sigma.
    const size_t hw = static_cast<size_t>(h) * w;
    const size_t latent = c.in_channels * hw;
    std::vector<float> input(static_cast<size_t>(n) * (latent + hw));
    for (int k = 0; k < n; ++k) {
        if (!std::isfinite(sigmas[k]) || sigmas[k] < 0.0f) {
            fail(CUTECPP_ERR_INVALID_ARGUMENT, "verifier sigmas must be finite and >= 0, got " + std::to_string(sigmas[k]));
        }
        float * at = input.data() + k * (latent + hw);
        std::memcpy(at, latents + k * latent, latent * sizeof(float));
        std::fill(at + latent, at + latent + hw, sigmas[k]);
    }
    plan(verifier_, {n, h, w}, [&](ggml_context * ctx, std::vector<ggml_tensor *> & in, std::vector<ggml_tensor *> & blocks) {
        in = {ggml_new_tensor_4d(ctx, GGML_TYPE_F32, w, h, c.in_channels + 1, n)};
        return build_verifier(ctx, model, in[0], blocks);
    });
    run(verifier_, {input.data()}, out);
}

size_t cutecpp_context::trace_get(const std::string & name, float * out, size_t capacity, int64_t shape[4]) const {
    if (!last_) fail(CUTECPP_ERR_INVALID_ARGUMENT, "no traced evaluation: enable tracing, then evaluate");
    std::string known;
    for (ggml_tensor * b : last_->blocks) {
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
