// Per-generation state: the ggml CPU backend and, per network, a compute graph
// and its buffers, planned once per input shape and reused across steps.
#pragma once

#include "model.h"

#include <functional>
#include <string>
#include <vector>

struct ggml_backend;
struct ggml_gallocr;
struct ggml_cgraph;
struct ggml_context;
struct ggml_tensor;

struct cutecpp_context {
    cutecpp_context(const cutecpp_model & model, int n_threads);
    ~cutecpp_context();
    cutecpp_context(const cutecpp_context &) = delete;
    cutecpp_context & operator=(const cutecpp_context &) = delete;

    // sample [n, C_in, h, w], timesteps [n], context [n, t, D] -> out [n, C_out, h, w] (C order).
    void unet_eval(const float * sample, int n, int h, int w, const float * timesteps, const float * context, int t,
                   float * out);
    // latents [n, C, h, w] (as the UNet produced them) -> image [n, 3, h*f, w*f] in [-1, 1]:
    // the tiny decoder, after undoing the latent scaling (LatentScaling in config.h).
    void tiny_decode(const float * latents, int n, int h, int w, float * out);
    // latents [n, C, h, w] (as the UNet produced them) -> image [n, 3, h*f, w*f], about [-1, 1]
    // (not clamped): the SD VAE decoder, after undoing the latent scaling (LatentScaling).
    void vae_decode(const float * latents, int n, int h, int w, float * out);
    // image [n, C, H, W] in [-1, 1] (H, W multiples of the encoder's downscale f) ->
    // latents [n, latent_channels, H/f, W/f] in the latent space the UNet and the tiny
    // decoder take: the tiny encoder, then the latent scaling (LatentScaling::scale).
    void tiny_encode(const float * image, int n, int h, int w, float * out);
    // The same with the SD VAE encoder; the latents are the posterior's mean (its mode).
    void vae_encode(const float * image, int n, int h, int w, float * out);
    // states [n, t, in_dim] (the text encoder's) -> context [n, t, ctx_dim] for the UNet (C order):
    // the alignment module.
    void align(const float * states, int n, int t, float * out);
    // latents [n, C, h, w] in the UNet's space (h, w multiples of the verifier's downscale), sigmas [n]
    // their noise levels -> logits [n, labels] (C order): the verifier (VerifierConfig in config.h).
    void verify(const float * latents, const float * sigmas, int n, int h, int w, float * out);

    // Keep each block's output of the next evaluations for trace_get().
    void set_trace(bool enable) { trace_ = enable; }
    // Copies a traced block output of the last evaluation (C order [n, C, H, W]; token
    // sequences [1, n, T, C]);
    // returns its element count, or fails naming the blocks there are.
    size_t trace_get(const std::string & name, float * out, size_t capacity, int64_t shape[4]) const;

    const cutecpp_model & model;
    const int n_threads;

private:
    // One network's graph for one input shape (and trace setting).
    struct Planned {
        std::vector<int64_t> key;
        ggml_gallocr * galloc = nullptr;
        ggml_context * ctx = nullptr;
        ggml_cgraph * graph = nullptr;
        std::vector<ggml_tensor *> inputs;
        ggml_tensor * output = nullptr;
        std::vector<ggml_tensor *> blocks;
    };
    using Builder = std::function<ggml_tensor *(ggml_context *, std::vector<ggml_tensor *> & inputs,
                                                std::vector<ggml_tensor *> & blocks)>;

    // A decoder's or an encoder's graph: one input, one output.
    using DecoderBuild = ggml_tensor * (*)(ggml_context *, const cutecpp_model &, ggml_tensor * input,
                                           std::vector<ggml_tensor *> & blocks);

    void plan(Planned & p, std::vector<int64_t> key, const Builder & build);
    void decode(Planned & p, DecoderBuild build, const cutecpp::LatentScaling & scaling, uint32_t latent_channels,
                uint32_t upscale, const float * latents, int n, int h, int w, float * out);
    void encode(Planned & p, DecoderBuild build, const cutecpp::LatentScaling & scaling, uint32_t in_channels,
                uint32_t latent_channels, uint32_t downscale, const float * image, int n, int h, int w, float * out);
    void run(Planned & p, const std::vector<const float *> & inputs, float * out);
    static void release(Planned & p);
    void profile(Planned & p);

    ggml_backend * backend_ = nullptr;
    // Two UNet plans: guided sampling alternates the conditional and the unconditional
    // context, whose token counts usually differ. The least recently used one is replanned.
    Planned unet_[2];
    int unet_recent_ = 0;
    Planned tiny_;
    Planned vae_;
    Planned tiny_encoder_;
    Planned vae_encoder_;
    Planned align_;
    Planned verifier_;
    const Planned * last_ = nullptr;  // the last evaluation, if it was traced
    bool trace_ = false;
    int profile_ = 0;  // CUTECPP_PROFILE: 1 times each node by op, 2 also by matmul shape
};
