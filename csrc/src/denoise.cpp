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

// How many candidates to draw and where to compare them (cutecpp.sampling.candidates, verify_sigma).
struct BestOf {
    int candidates = 1;
    int check_step = 0;  // the candidates run steps 0 .. check_step - 1; the chosen one the rest
};

BestOf best_of_plan(const cutecpp_model & model, const SamplingConfig & sc, const Schedule & s,
                    const cutecpp_sample_params & params, int h, int w) {
    BestOf b;
    b.candidates = params.candidates == -1 ? static_cast<int>(sc.candidates.value_or(1)) : params.candidates;
    if (b.candidates < 1 || b.candidates > static_cast<int>(kMaxCandidates)) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "candidates must be 1 to " + std::to_string(kMaxCandidates) +
                                               " (-1: the model's default), got " + std::to_string(params.candidates));
    }
    if (b.candidates == 1) return b;
    if (!model.config.verifier) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, std::to_string(b.candidates) +
                                               " candidates need a verifier to choose among them, and the model has none");
    }
    const size_t n_labels = model.config.verifier->labels.size();
    if (params.n_verify_labels < 1 || params.verify_labels == nullptr) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "candidates need the verifier labels the prompt asks for (verify_labels)");
    }
    if (static_cast<size_t>(params.n_verify_labels) > n_labels) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "n_verify_labels " + std::to_string(params.n_verify_labels) +
                                               " is more than the verifier's " + std::to_string(n_labels) + " labels");
    }
    for (int j = 0; j < params.n_verify_labels; ++j) {
        if (params.verify_labels[j] < 0 || static_cast<size_t>(params.verify_labels[j]) >= n_labels) {
            fail(CUTECPP_ERR_INVALID_ARGUMENT, "verify label " + std::to_string(params.verify_labels[j]) +
                                                   " is not one of the verifier's 0 to " + std::to_string(n_labels - 1));
        }
    }
    const float at = std::isnan(params.verify_sigma) ? sc.verify_sigma : params.verify_sigma;
    if (std::isnan(params.verify_sigma) && !sc.candidates) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "candidates need verify_sigma: the model sets none (cutecpp.sampling.verify_sigma)");
    }
    if (!(std::isfinite(at) && at >= 0.0f)) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "verify_sigma must be finite and >= 0 (NAN: the model's), got " + std::to_string(at));
    }
    const int multiple = static_cast<int>(model.config.verifier->body.downscale());
    if (h % multiple || w % multiple) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "candidates: the verifier needs latent sides that are multiples of " +
                                               std::to_string(multiple) + ", got " + std::to_string(h) + "x" + std::to_string(w));
    }
    while (b.check_step < s.steps && s.sigmas[b.check_step] > at) ++b.check_step;
    return b;
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
    const BestOf best_of = best_of_plan(model, sc, s, params, h, w);

    const size_t n = static_cast<size_t>(unet.in_channels) * h * w;
    const size_t dim = unet.cross_attention_dim;
    // Both contexts in one UNet call of batch 2 ([uncond, cond], as diffusers) when their token
    // counts match; otherwise two calls (the context keeps a plan for each shape).
    const bool batched = guided && n_cond == n_uncond;
    std::vector<float> input(batched ? 2 * n : n), pred(batched ? 2 * n : n), pred_uncond;
    std::vector<float> noise, both_contexts;
    if (guided && !batched) pred_uncond.resize(n);
    if (batched) {
        both_contexts.resize(2 * n_cond * dim);
        std::memcpy(both_contexts.data(), uncond, n_cond * dim * sizeof(float));
        std::memcpy(both_contexts.data() + n_cond * dim, cond, n_cond * dim * sizeof(float));
    }
    // Progress counts every step run: each candidate's steps up to the check, then the rest once.
    const int total = best_of.candidates * best_of.check_step + (steps - best_of.check_step);
    int done = 0;

    // Steps first .. last - 1 of the run of `seed` on x (and its sampler history `state`).
    const auto run = [&](uint64_t seed, int first, int last, float * x, float * state) {
        for (int i = first; i < last; ++i) {
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
                rng_normal(seed, 1 + static_cast<uint64_t>(i), 0, static_cast<int64_t>(n), noise.data());
            }
            sampler_step(s, i, model_output, x, noise.empty() ? nullptr : noise.data(), state, x, n);
            ++done;
            if (params.progress != nullptr && !params.progress(done, total, params.progress_user_data)) {
                fail(CUTECPP_ERR_CANCELLED, "cancelled by the progress callback after step " + std::to_string(done) +
                                                " of " + std::to_string(total));
            }
        }
    };

    // Candidate k is the run of seed + k * 2^32 (mod 2^64), so that the candidates of seeds below 2^32 (the
    // CLI's, whose --count draws seed, seed + 1, ...) never meet another seed's.
    const int m = best_of.candidates;
    const auto seed_of = [&](int k) { return params.seed + (static_cast<uint64_t>(k) << 32); };
    std::vector<float> xs(m * n), states(s.uses_state() ? m * n : 0);
    for (int k = 0; k < m; ++k) {
        float * x = xs.data() + k * n;
        rng_normal(seed_of(k), 0, 0, static_cast<int64_t>(n), x);
        for (size_t j = 0; j < n; ++j) x[j] = x[j] * s.init_noise_sigma;
        run(seed_of(k), 0, best_of.check_step, x, states.empty() ? nullptr : states.data() + k * n);
    }
    int chosen = 0;
    if (m > 1) {
        std::vector<float> sigmas(m, s.sigmas[best_of.check_step]);
        const size_t n_labels = model.config.verifier->labels.size();
        std::vector<float> logits(m * n_labels);
        ctx.verify(xs.data(), sigmas.data(), m, h, w, logits.data());
        double best = 0.0;
        for (int k = 0; k < m; ++k) {
            double score = 0.0;  // the log-probability that every asked label is there
            for (int j = 0; j < params.n_verify_labels; ++j) {
                const double z = logits[k * n_labels + params.verify_labels[j]];
                score -= z > 0.0 ? std::log1p(std::exp(-z)) : -z + std::log1p(std::exp(z));
            }
            if (k == 0 || score > best) {
                best = score;
                chosen = k;
            }
        }
    }
    float * x = xs.data() + chosen * n;
    run(seed_of(chosen), best_of.check_step, steps, x,
        states.empty() ? nullptr : states.data() + chosen * n);
    if (params.out_candidate != nullptr) *params.out_candidate = chosen;
    std::memcpy(out, x, n * sizeof(float));
}

}  // namespace cutecpp
