// The denoising loop (see denoise.h), as a diffusers text-to-image pipeline
// runs it: latents = noise * init_noise_sigma; per step the scaled input goes
// through the UNet as the batch [uncond, cond], noise_pred = uncond + cfg *
// (cond - uncond), then scheduler.step(); steps whose sigma is above the bundle's
// guidance_max_sigma (when it has one) evaluate cond alone. Compiled with -ffp-contract=off.
#include "denoise.h"

#include "context.h"
#include "error.h"
#include "rng.h"
#include "sampler.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace cutecpp {

namespace {

constexpr int kMaxTokens = 1024;  // as cutecpp_unet_eval
constexpr int kMaxSide = 1024;
constexpr float kMaxCfg = 100.0f;

void check_tokens(const char * what, const float * states, int n) {
    if (states == nullptr) fail(CUTECPP_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
    if (n < 1 || n > kMaxTokens) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, std::string(what) + " must have 1 to " + std::to_string(kMaxTokens) +
                                               " tokens, got " + std::to_string(n));
    }
}

}  // namespace

void denoise(cutecpp_context & ctx, const float * cond, int n_cond, const float * uncond, int n_uncond,
             const cutecpp_sample_params & params, float * out) {
    const cutecpp_model & model = ctx.model;
    if (!model.config.unet) fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no unet component");
    if (!model.config.sampling) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no sampling section (cutecpp.sampling.*), so it cannot be "
                                           "sampled: convert it with its scheduler config "
                                           "(tools/convert_diffusers.py --scheduler)");
    }
    const UnetConfig & unet = *model.config.unet;
    const SamplingConfig & sc = *model.config.sampling;

    const int32_t sampler = params.sampler == -1 ? sampler_id(sc.default_sampler) : params.sampler;
    if (sampler < 0 || sampler >= kSamplerCount) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "unknown sampler " + std::to_string(sampler) + " (-1 for the model's default, 0 to " +
                                               std::to_string(kSamplerCount - 1) + ": " + sampler_list() + ")");
    }
    const int steps = params.steps == -1 ? static_cast<int>(sc.default_steps) : params.steps;
    const float cfg = std::isnan(params.cfg_scale) ? sc.default_cfg : params.cfg_scale;
    if (!(cfg >= 0.0f && cfg <= kMaxCfg)) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "cfg_scale must be 0 to 100 (NAN for the model's default), got " +
                                               std::to_string(cfg));
    }
    const int multiple = 1 << (unet.block_out_channels.size() - 1);
    const int h = params.latent_height == -1 ? static_cast<int>(unet.sample_size) : params.latent_height;
    const int w = params.latent_width == -1 ? static_cast<int>(unet.sample_size) : params.latent_width;
    if (h < 1 || w < 1 || h > kMaxSide || w > kMaxSide || h % multiple || w % multiple) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "latent height and width must be 1 to " + std::to_string(kMaxSide) +
                                               " and multiples of " + std::to_string(multiple) +
                                               " (-1: the unet's sample_size " + std::to_string(unet.sample_size) +
                                               "), got " + std::to_string(params.latent_height) + "x" +
                                               std::to_string(params.latent_width));
    }
    check_tokens("cond", cond, n_cond);
    const bool guided = cfg != 1.0f;
    if (guided) {
        if (uncond == nullptr) {
            fail(CUTECPP_ERR_INVALID_ARGUMENT, "cfg_scale " + std::to_string(cfg) +
                                                   " needs the unconditional context, but uncond is NULL");
        }
        check_tokens("uncond", uncond, n_uncond);
    }
    if (unet.in_channels != unet.out_channels) {
        fail(CUTECPP_ERR_UNSUPPORTED, "the unet outputs " + std::to_string(unet.out_channels) + " channels for " +
                                          std::to_string(unet.in_channels) + " latent channels: it cannot be sampled");
    }
    const Schedule s = make_schedule(sc, static_cast<Sampler>(sampler), steps);

    const size_t n = static_cast<size_t>(unet.in_channels) * h * w;
    const size_t dim = unet.cross_attention_dim;
    // Both contexts in one UNet call of batch 2 ([uncond, cond], as diffusers) when their token
    // counts match; otherwise two calls (the context keeps a plan for each shape).
    const bool batched = guided && n_cond == n_uncond;
    std::vector<float> x(n), input(batched ? 2 * n : n), pred(batched ? 2 * n : n), pred_uncond;
    std::vector<float> noise, state, both_contexts;
    if (guided && !batched) pred_uncond.resize(n);
    if (s.uses_state()) state.resize(n);
    if (batched) {
        both_contexts.resize(2 * n_cond * dim);
        std::memcpy(both_contexts.data(), uncond, n_cond * dim * sizeof(float));
        std::memcpy(both_contexts.data() + n_cond * dim, cond, n_cond * dim * sizeof(float));
    }

    rng_normal(params.seed, 0, 0, static_cast<int64_t>(n), x.data());  // stream 0: the initial latent
    for (float & v : x) v = v * s.init_noise_sigma;

    for (int i = 0; i < steps; ++i) {
        for (size_t k = 0; k < n; ++k) input[k] = s.scales_input() ? x[k] / s.input_divisors[i] : x[k];
        const float t[2] = {s.timesteps[i], s.timesteps[i]};
        // The bundle's guidance_max_sigma leaves the noisiest steps unguided: the prompt alone.
        const bool guide = guided && (!sc.guidance_max_sigma || s.sigmas[i] <= *sc.guidance_max_sigma);
        const float * eps_cond = pred.data();
        const float * eps_uncond = nullptr;
        if (guide && batched) {
            std::memcpy(input.data() + n, input.data(), n * sizeof(float));
            ctx.unet_eval(input.data(), 2, h, w, t, both_contexts.data(), n_cond, pred.data());
            eps_uncond = pred.data();
            eps_cond = pred.data() + n;
        } else {
            ctx.unet_eval(input.data(), 1, h, w, t, cond, n_cond, pred.data());
            if (guide) {
                ctx.unet_eval(input.data(), 1, h, w, t, uncond, n_uncond, pred_uncond.data());
                eps_uncond = pred_uncond.data();
            }
        }
        const float * model_output = eps_cond;
        if (guide) {  // written into the first n of `input`, which the UNet no longer needs
            for (size_t k = 0; k < n; ++k) input[k] = eps_uncond[k] + cfg * (eps_cond[k] - eps_uncond[k]);
            model_output = input.data();
        }
        if (s.needs_noise(i)) {  // stream 1 + i: the noise step i adds
            noise.resize(n);
            rng_normal(params.seed, 1 + static_cast<uint64_t>(i), 0, static_cast<int64_t>(n), noise.data());
        }
        sampler_step(s, i, model_output, x.data(), noise.empty() ? nullptr : noise.data(),
                     state.empty() ? nullptr : state.data(), x.data(), n);
        if (params.progress != nullptr && !params.progress(i + 1, steps, params.progress_user_data)) {
            fail(CUTECPP_ERR_CANCELLED, "cancelled by the progress callback after step " + std::to_string(i + 1) +
                                            " of " + std::to_string(steps));
        }
    }
    std::memcpy(out, x.data(), n * sizeof(float));
}

}  // namespace cutecpp
