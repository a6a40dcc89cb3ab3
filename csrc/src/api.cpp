// The C API: every entry point runs inside guard(), so no exception escapes.
#include "cutecpp.h"

#include "error.h"
#include "context.h"
#include "denoise.h"
#include "gemm_q8.h"
#include "model.h"
#include "rng.h"
#include "sampler.h"

#include "ggml-cpu.h"
#include "ggml.h"

#include <algorithm>
#include <cmath>
#include <sched.h>
#include <string>
#include <thread>

#ifndef CUTECPP_VERSION
#error "CUTECPP_VERSION must be defined by the build"
#endif

using namespace cutecpp;

namespace {

std::string cpu_features() {
    struct Feature {
        const char * name;
        int (*has)();
    };
    static const Feature features[] = {
        {"SSE3", ggml_cpu_has_sse3},           {"SSSE3", ggml_cpu_has_ssse3},
        {"AVX", ggml_cpu_has_avx},             {"AVX_VNNI", ggml_cpu_has_avx_vnni},
        {"AVX2", ggml_cpu_has_avx2},           {"BMI2", ggml_cpu_has_bmi2},
        {"F16C", ggml_cpu_has_f16c},           {"FMA", ggml_cpu_has_fma},
        {"AVX512", ggml_cpu_has_avx512},       {"AVX512_VBMI", ggml_cpu_has_avx512_vbmi},
        {"AVX512_VNNI", ggml_cpu_has_avx512_vnni}, {"AVX512_BF16", ggml_cpu_has_avx512_bf16},
        {"AMX_INT8", ggml_cpu_has_amx_int8},   {"NEON", ggml_cpu_has_neon},
        {"ARM_FMA", ggml_cpu_has_arm_fma},     {"FP16_VA", ggml_cpu_has_fp16_va},
        {"DOTPROD", ggml_cpu_has_dotprod},     {"MATMUL_INT8", ggml_cpu_has_matmul_int8},
        {"SVE", ggml_cpu_has_sve},             {"SME", ggml_cpu_has_sme},
        {"RISCV_V", ggml_cpu_has_riscv_v},     {"VSX", ggml_cpu_has_vsx},
        {"WASM_SIMD", ggml_cpu_has_wasm_simd}, {"LLAMAFILE", ggml_cpu_has_llamafile},
    };
    std::string out;
    for (const auto & f : features) {
        if (f.has()) out += (out.empty() ? "" : " ") + std::string(f.name);
    }
    return out;
}

const SamplingConfig & sampling_of(const cutecpp_model * model, const char * fn) {
    if (!model) fail(CUTECPP_ERR_INVALID_ARGUMENT, std::string(fn) + ": model is NULL");
    if (!model->config.sampling) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "the model has no sampling section (cutecpp.sampling.*)");
    }
    return *model->config.sampling;
}

}  // namespace

extern "C" {

const char * cutecpp_version(void) { return CUTECPP_VERSION; }

const char * cutecpp_cpu_features(void) {
    static const std::string features = [] {
        try {
            return cpu_features();
        } catch (...) {
            return std::string();
        }
    }();
    return features.c_str();
}

const char * cutecpp_int8_products(void) {
    const char * isa = gemm_q8::isa();
    return isa ? isa : "";
}

int32_t cutecpp_default_threads(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    const unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int32_t>(n) : 1;
}

const char * cutecpp_last_error(void) { return last_error(); }

const char * cutecpp_status_name(cutecpp_status status) {
    switch (status) {
        case CUTECPP_OK: return "ok";
        case CUTECPP_ERR_INVALID_ARGUMENT: return "invalid argument";
        case CUTECPP_ERR_IO: return "i/o error";
        case CUTECPP_ERR_FORMAT: return "format error";
        case CUTECPP_ERR_MODEL: return "invalid model";
        case CUTECPP_ERR_UNSUPPORTED: return "unsupported";
        case CUTECPP_ERR_OUT_OF_MEMORY: return "out of memory";
        case CUTECPP_ERR_INTERNAL: return "internal error";
        case CUTECPP_ERR_CANCELLED: return "cancelled";
    }
    return "unknown status";
}

struct cutecpp_model_params cutecpp_model_default_params(void) {
    cutecpp_model_params p;
    p.use_mmap = true;
    return p;
}

struct cutecpp_context_params cutecpp_context_default_params(void) {
    cutecpp_context_params p;
    p.n_threads = 0;
    return p;
}

cutecpp_status cutecpp_model_load(const char * path, struct cutecpp_model_params params, struct cutecpp_model ** out) {
    return guard([&] {
        if (out == nullptr) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_model_load: out is NULL");
        *out = nullptr;
        if (path == nullptr || path[0] == '\0') fail(CUTECPP_ERR_INVALID_ARGUMENT, "no model path given");
        try {
            *out = new cutecpp_model(path, params.use_mmap);
        } catch (const Error & e) {
            // Every load error reads "<path>: <problem>".
            fail(e.status(), std::string(path) + ": " + e.what());
        }
    });
}

void cutecpp_model_free(struct cutecpp_model * model) { delete model; }

const char * cutecpp_model_info_json(const struct cutecpp_model * model) {
    return model ? model->info_json.c_str() : "null";
}

cutecpp_status cutecpp_context_init(const struct cutecpp_model * model, struct cutecpp_context_params params,
                                    struct cutecpp_context ** out) {
    return guard([&] {
        if (out == nullptr) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_context_init: out is NULL");
        *out = nullptr;
        if (model == nullptr) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_context_init: model is NULL");
        if (params.n_threads > 1024) {
            fail(CUTECPP_ERR_INVALID_ARGUMENT, "n_threads " + std::to_string(params.n_threads) + " is too large");
        }
        const int32_t threads = params.n_threads > 0 ? params.n_threads : cutecpp_default_threads();
        *out = new cutecpp_context(*model, threads);
    });
}

void cutecpp_context_free(struct cutecpp_context * ctx) { delete ctx; }

cutecpp_status cutecpp_context_set_trace(struct cutecpp_context * ctx, bool enable) {
    return guard([&] {
        if (!ctx) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_context_set_trace: ctx is NULL");
        ctx->set_trace(enable);
    });
}

cutecpp_status cutecpp_context_trace_get(const struct cutecpp_context * ctx, const char * name, float * out,
                                         size_t capacity, int64_t * shape, size_t * count) {
    return guard([&] {
        if (!ctx || !name || !shape || !count) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_context_trace_get: NULL argument");
        *count = ctx->trace_get(name, out, capacity, shape);
    });
}

cutecpp_status cutecpp_tiny_decode(struct cutecpp_context * ctx, const float * latents, int32_t n, int32_t height,
                                   int32_t width, float * out) {
    return guard([&] {
        if (!ctx || !latents || !out) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_tiny_decode: NULL argument");
        ctx->tiny_decode(latents, n, height, width, out);
    });
}

cutecpp_status cutecpp_vae_decode(struct cutecpp_context * ctx, const float * latents, int32_t n, int32_t height,
                                  int32_t width, float * out) {
    return guard([&] {
        if (!ctx || !latents || !out) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_vae_decode: NULL argument");
        ctx->vae_decode(latents, n, height, width, out);
    });
}

cutecpp_status cutecpp_tiny_encode(struct cutecpp_context * ctx, const float * images, int32_t n, int32_t height,
                                   int32_t width, float * out) {
    return guard([&] {
        if (!ctx || !images || !out) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_tiny_encode: NULL argument");
        ctx->tiny_encode(images, n, height, width, out);
    });
}

cutecpp_status cutecpp_vae_encode(struct cutecpp_context * ctx, const float * images, int32_t n, int32_t height,
                                  int32_t width, float * out) {
    return guard([&] {
        if (!ctx || !images || !out) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_vae_encode: NULL argument");
        ctx->vae_encode(images, n, height, width, out);
    });
}

cutecpp_status cutecpp_unet_eval(struct cutecpp_context * ctx, const float * sample, int32_t n, int32_t height,
                                 int32_t width, const float * timesteps, const float * context, int32_t n_tokens,
                                 float * out) {
    return guard([&] {
        if (!ctx || !sample || !timesteps || !context || !out) {
            fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_unet_eval: NULL argument");
        }
        ctx->unet_eval(sample, n, height, width, timesteps, context, n_tokens, out);
    });
}

cutecpp_status cutecpp_align(struct cutecpp_context * ctx, const float * states, int32_t n, int32_t n_tokens,
                             float * out) {
    return guard([&] {
        if (!ctx || !states || !out) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_align: NULL argument");
        ctx->align(states, n, n_tokens, out);
    });
}

cutecpp_status cutecpp_verify(struct cutecpp_context * ctx, const float * latents, const float * sigmas, int32_t n,
                              int32_t height, int32_t width, float * out) {
    return guard([&] {
        if (!ctx || !latents || !sigmas || !out) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_verify: NULL argument");
        ctx->verify(latents, sigmas, n, height, width, out);
    });
}

int32_t cutecpp_context_n_threads(const struct cutecpp_context * ctx) { return ctx ? ctx->n_threads : 0; }

const char * cutecpp_sampler_name(int32_t sampler) { return sampler_name(sampler); }

struct cutecpp_sample_params cutecpp_sample_default_params(void) {
    cutecpp_sample_params p;
    p.sampler = -1;
    p.steps = -1;
    p.cfg_scale = NAN;
    p.seed = 0;
    p.latent_height = -1;
    p.latent_width = -1;
    p.progress = nullptr;
    p.progress_user_data = nullptr;
    p.candidates = -1;
    p.verify_sigma = NAN;
    p.verify_labels = nullptr;
    p.n_verify_labels = 0;
    p.out_candidate = nullptr;
    return p;
}

cutecpp_status cutecpp_sample(struct cutecpp_context * ctx, const float * cond, int32_t n_cond_tokens,
                              const float * uncond, int32_t n_uncond_tokens, struct cutecpp_sample_params params,
                              float * out_latents) {
    return guard([&] {
        if (!ctx || !out_latents) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_sample: NULL argument");
        denoise(*ctx, cond, n_cond_tokens, uncond, n_uncond_tokens, params, out_latents);
    });
}

cutecpp_status cutecpp_rng_normal(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float * out) {
    return guard([&] {
        if (n < 0) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_rng_normal: n is negative");
        if (n > 0 && !out) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_rng_normal: out is NULL");
        if (static_cast<uint64_t>(n) > UINT64_MAX - offset) {
            fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_rng_normal: offset + n exceeds 2^64");
        }
        rng_normal(seed, stream, offset, n, out);
    });
}

cutecpp_status cutecpp_sampler_schedule(const struct cutecpp_model * model, int32_t sampler, int32_t steps,
                                        float * sigmas, float * timesteps, float * input_divisors,
                                        float * init_noise_sigma) {
    return guard([&] {
        const Schedule s = make_schedule(sampling_of(model, "cutecpp_sampler_schedule"), static_cast<Sampler>(sampler),
                                         steps);
        if (sigmas) std::copy(s.sigmas.begin(), s.sigmas.end(), sigmas);
        if (timesteps) std::copy(s.timesteps.begin(), s.timesteps.end(), timesteps);
        if (input_divisors) std::copy(s.input_divisors.begin(), s.input_divisors.end(), input_divisors);
        if (init_noise_sigma) *init_noise_sigma = s.init_noise_sigma;
    });
}

cutecpp_status cutecpp_sampler_step(const struct cutecpp_model * model, int32_t sampler, int32_t steps, int32_t step,
                                    const float * model_output, const float * sample, const float * noise,
                                    float * state, float * out, int64_t n) {
    return guard([&] {
        const Schedule s = make_schedule(sampling_of(model, "cutecpp_sampler_step"), static_cast<Sampler>(sampler),
                                         steps);
        if (n < 0) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_sampler_step: n is negative");
        if (n > 0 && (!model_output || !sample || !out)) fail(CUTECPP_ERR_INVALID_ARGUMENT, "cutecpp_sampler_step: NULL argument");
        sampler_step(s, step, model_output, sample, noise, state, out, static_cast<size_t>(n));
    });
}

}  // extern "C"
