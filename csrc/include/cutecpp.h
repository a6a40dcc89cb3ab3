// cutecpp: offline picture engine, C API.
//
// This header is the only thing the Python binding sees: cutecpp/_ffi_build.py
// feeds the declarations between CUTECPP_CDEF_BEGIN and CUTECPP_CDEF_END to
// cffi, so keep that region plain C (no macros other than CUTECPP_API, no
// preprocessor lines).
//
// Conventions (as llama.h / whisper.h):
//  - opaque handles: a cutecpp_model is immutable after loading and may be
//    shared between threads; a cutecpp_context belongs to one generation at a
//    time and must not be used from two threads at once; free every context
//    of a model before the model;
//  - every call that can fail returns a cutecpp_status; on failure
//    cutecpp_last_error() returns a message for the calling thread;
//  - no C++ exception ever crosses this boundary;
//  - a pointer returned by the library is owned by the library and is valid
//    until the handle it came from is freed (or, for strings with no handle,
//    until the next call on the same thread).

#ifndef CUTECPP_H
#define CUTECPP_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#if defined(_WIN32)
#  define CUTECPP_API __declspec(dllexport)
#else
#  define CUTECPP_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

// CUTECPP_CDEF_BEGIN

typedef enum cutecpp_status {
    CUTECPP_OK                  = 0,
    CUTECPP_ERR_INVALID_ARGUMENT = 1,  // a NULL handle, a bad parameter value
    CUTECPP_ERR_IO              = 2,  // missing file, directory, unreadable, mmap failed
    CUTECPP_ERR_FORMAT          = 3,  // not GGUF, truncated, corrupt, unsupported version
    CUTECPP_ERR_MODEL           = 4,  // valid GGUF but not a valid cutecpp bundle
    CUTECPP_ERR_UNSUPPORTED     = 5,  // a config value or dtype this build does not support
    CUTECPP_ERR_OUT_OF_MEMORY   = 6,
    CUTECPP_ERR_INTERNAL        = 7,  // a bug: please report it
    CUTECPP_ERR_CANCELLED       = 8,  // a progress callback asked to stop
} cutecpp_status;

struct cutecpp_model;
struct cutecpp_context;

struct cutecpp_model_params {
    bool use_mmap;   // map the weights instead of reading them into memory
};

struct cutecpp_context_params {
    int32_t n_threads;  // <= 0: one per CPU the process may run on (its affinity mask)
};

// Library identity and machine description.
CUTECPP_API const char * cutecpp_version(void);
// Space separated ggml CPU features that are available, e.g. "AVX2 F16C FMA".
CUTECPP_API const char * cutecpp_cpu_features(void);
// The instruction set q8_0 products run on ("avx-vnni", "avx512-vnni"), or ""
// where they stay in ggml's mul_mat (no int8 dot products here, or CUTECPP_INT8=0).
CUTECPP_API const char * cutecpp_int8_products(void);
// Threads a context uses by default.
CUTECPP_API int32_t      cutecpp_default_threads(void);
// Message of the last failed call on this thread ("" if none).
CUTECPP_API const char * cutecpp_last_error(void);
CUTECPP_API const char * cutecpp_status_name(cutecpp_status status);

CUTECPP_API struct cutecpp_model_params   cutecpp_model_default_params(void);
CUTECPP_API struct cutecpp_context_params cutecpp_context_default_params(void);

// Loads and validates a model bundle (docs/bundle-format.md). Every key,
// tensor name, shape, dtype, offset and size is checked before any tensor is
// used; on failure *out is NULL and cutecpp_last_error() names the problem.
CUTECPP_API cutecpp_status cutecpp_model_load(const char * path,
                                              struct cutecpp_model_params params,
                                              struct cutecpp_model ** out);
CUTECPP_API void           cutecpp_model_free(struct cutecpp_model * model);

// A JSON object describing the bundle: format version, model id, the config
// of each component, tensor count, bytes per dtype, file size. Owned by the
// model.
CUTECPP_API const char *   cutecpp_model_info_json(const struct cutecpp_model * model);

CUTECPP_API cutecpp_status cutecpp_context_init(const struct cutecpp_model * model,
                                                struct cutecpp_context_params params,
                                                struct cutecpp_context ** out);
CUTECPP_API void           cutecpp_context_free(struct cutecpp_context * ctx);
CUTECPP_API int32_t        cutecpp_context_n_threads(const struct cutecpp_context * ctx);

// One UNet evaluation. Arrays are float32, C order (row-major):
//   sample    [n, in_channels, height, width]  (height, width: latent pixels)
//   timesteps [n]
//   context   [n, n_tokens, cross_attention_dim]
//   out       [n, out_channels, height, width]
// The compute graph and buffers are planned on the first call for a shape
// and reused while the shape stays the same.
CUTECPP_API cutecpp_status cutecpp_unet_eval(struct cutecpp_context * ctx,
                                             const float * sample, int32_t n, int32_t height, int32_t width,
                                             const float * timesteps,
                                             const float * context, int32_t n_tokens,
                                             float * out);

// Decodes latents with the bundle's tiny decoder (TAESD-style):
//   latents [n, latent_channels, height, width] -> out [n, 3, height*f, width*f]
// with f the decoder's upsampling (16 for cute-mini); values in [-1, 1].
// latents are taken as the UNet produced them: the decoder first computes
// latents / scaling_factor + shift_factor (both from the bundle; with per-channel
// statistics latents * latents_std[c] / scaling_factor + latents_mean[c] + shift_factor).
CUTECPP_API cutecpp_status cutecpp_tiny_decode(struct cutecpp_context * ctx,
                                               const float * latents, int32_t n, int32_t height, int32_t width,
                                               float * out);

// Decodes latents with the bundle's VAE decoder (diffusers AutoencoderKL):
//   latents [n, latent_channels, height, width] -> out [n, out_channels, height*f, width*f]
// with f = 2^(levels-1) (8 for SD). latents are taken as the UNet produced
// them: the decoder first computes latents / scaling_factor + shift_factor,
// as diffusers pipelines do before vae.decode(). Values are about [-1, 1],
// not clamped.
CUTECPP_API cutecpp_status cutecpp_vae_decode(struct cutecpp_context * ctx,
                                              const float * latents, int32_t n, int32_t height, int32_t width,
                                              float * out);

// Encodes pictures with the bundle's tiny encoder (the encoder half of a diffusers
// AutoencoderTiny, TAESD-style), e.g. for img2img:
//   images [n, in_channels, height, width] in [-1, 1] -> out [n, latent_channels, height/f, width/f]
// with f = 2^(stages-1) (8 for TAESD); height and width must be multiples of f, at most 4096.
// The latents are in the space the UNet and cutecpp_tiny_decode take: the encoder's
// output x then becomes (x - shift_factor) * scaling_factor (per-channel statistics:
// (x - latents_mean[c] - shift_factor) * scaling_factor / latents_std[c]), exactly what
// the tiny decoder undoes first. Planned once per (n, height, width) and reused.
CUTECPP_API cutecpp_status cutecpp_tiny_encode(struct cutecpp_context * ctx,
                                               const float * images, int32_t n, int32_t height, int32_t width,
                                               float * out);

// Encodes pictures with the bundle's VAE encoder (diffusers AutoencoderKL: the encoder and
// quant_conv), as cutecpp_tiny_encode: f = 2^(levels-1) (8 for SD). The latents are the
// posterior's mean (diffusers' latent_dist.mode(), no sampling), scaled as for
// cutecpp_tiny_encode with the bundle's vae_encoder settings: the inverse of what
// cutecpp_vae_decode undoes first.
CUTECPP_API cutecpp_status cutecpp_vae_encode(struct cutecpp_context * ctx,
                                              const float * images, int32_t n, int32_t height, int32_t width,
                                              float * out);

// Maps text-encoder hidden states to the UNet's cross-attention context with
// the bundle's alignment module (docs/bundle-format.md):
//   states [n, n_tokens, in_dim] -> out [n, n_tokens, ctx_dim]
// float32, C order; 1 <= n <= 64, 1 <= n_tokens <= 4096. Every token of a row
// is attended to (no padding mask). Planned once per (n, n_tokens) and reused.
CUTECPP_API cutecpp_status cutecpp_align(struct cutecpp_context * ctx, const float * states, int32_t n,
                                         int32_t n_tokens, float * out);

// Latents to verifier logits (needs a verifier component, docs/bundle-format.md):
//   latents [n, C, height, width] in the UNet's space (sides multiples of its downscale), sigmas [n]
//   their noise levels -> out [n, labels], one logit per label (cutecpp_model_info_json names them).
CUTECPP_API cutecpp_status cutecpp_verify(struct cutecpp_context * ctx, const float * latents, const float * sigmas,
                                          int32_t n, int32_t height, int32_t width, float * out);

// Debugging and parity tests: with tracing on, evaluations keep the output of
// every block ("unet.conv_in", "unet.down_blocks.0", ..., "unet.mid_block",
// "unet.up_blocks.0", ..., "unet.conv_out"; the decoders: "tiny_decoder.decoder.layers.<i>",
// "vae_decoder.post_quant_conv", "vae_decoder.decoder.conv_in", "vae_decoder.decoder.mid_block",
// "vae_decoder.decoder.up_blocks.<i>", "vae_decoder.decoder.conv_out"; the encoders:
// "tiny_encoder.encoder.layers.<i>", "vae_encoder.encoder.conv_in", "vae_encoder.encoder.down_blocks.<i>",
// "vae_encoder.encoder.mid_block", "vae_encoder.encoder.conv_out", "vae_encoder.quant_conv",
// the verifier: "verifier.encoder.layers.<i>", "verifier.logits";
// all before the latent scaling; the alignment module:
// "alignment.proj_in", "alignment.blocks.<i>", "alignment.proj_out"); cutecpp_context_trace_get copies
// one into out (C order; shape gets [n, C, H, W], or [1, n, T, C] for token
// sequences) and sets *count to its element count. out may be NULL to ask for
// the count and shape only.
CUTECPP_API cutecpp_status cutecpp_context_set_trace(struct cutecpp_context * ctx, bool enable);
CUTECPP_API cutecpp_status cutecpp_context_trace_get(const struct cutecpp_context * ctx, const char * name,
                                                     float * out, size_t capacity, int64_t * shape,
                                                     size_t * count);

// --- Sampling (docs/bundle-format.md, cutecpp.sampling.*) -----------------------
//
// Samplers, computed as their diffusers 0.42.1 schedulers compute them from the
// bundle's training schedule:
//   EULER_A          EulerAncestralDiscreteScheduler
//   EULER            EulerDiscreteScheduler
//   DPMPP_2M_KARRAS  DPMSolverMultistepScheduler (dpmsolver++, order 2, Karras sigmas, final sigma 0)
//   LCM              LCMScheduler (at most 50 steps)
//   FLOW_EULER       FlowMatchEulerDiscreteScheduler with the bundle's flow_shift (flow models only)
enum cutecpp_sampler {
    CUTECPP_SAMPLER_EULER_A         = 0,
    CUTECPP_SAMPLER_EULER           = 1,
    CUTECPP_SAMPLER_DPMPP_2M_KARRAS = 2,
    CUTECPP_SAMPLER_LCM             = 3,
    CUTECPP_SAMPLER_FLOW_EULER      = 4,
};

// The sampler's name as the bundle and the Python API spell it ("euler_a", ...);
// NULL for an unknown value (so 0, 1, ... until NULL lists them all).
CUTECPP_API const char * cutecpp_sampler_name(int32_t sampler);

// Called after each step with the number of steps done (1..n_steps; with candidates, every
// candidate's steps count); returning false stops the run, which then returns CUTECPP_ERR_CANCELLED.
typedef bool (*cutecpp_progress_callback)(int32_t step, int32_t n_steps, void * user_data);

struct cutecpp_sample_params {
    int32_t sampler;          // an enum cutecpp_sampler; -1: the bundle's default_sampler
    int32_t steps;            // 1..1000; -1: the bundle's default_steps
    float   cfg_scale;        // classifier-free guidance, 0..100; NAN: the bundle's default_cfg
    uint64_t seed;            // the noise: see cutecpp_rng_normal
    int32_t latent_height;    // latent pixels; -1: the unet's sample_size
    int32_t latent_width;
    cutecpp_progress_callback progress;  // may be NULL
    void *  progress_user_data;
    // Best of several seeds (needs a verifier component): candidate k is the run of seed + k * 2^32
    // (mod 2^64); each runs to the first step whose sigma is at most verify_sigma, the verifier
    // scores them there and the one most surely holding every label of verify_labels (indices
    // into the verifier's labels, the prompt's animals, items and place) runs the remaining steps.
    // The result is exactly that seed's latents from a run with candidates 1.
    int32_t candidates;            // 1..16; -1: the bundle's cutecpp.sampling.candidates (absent: 1)
    float   verify_sigma;          // NAN: the bundle's cutecpp.sampling.verify_sigma
    const int32_t * verify_labels; // n_verify_labels indices; needed when candidates > 1
    int32_t n_verify_labels;
    int32_t * out_candidate;       // may be NULL; set to the chosen k on success
};

// sampler -1, steps -1, cfg_scale NAN, seed 0, latent size -1 x -1, no callback, candidates -1,
// verify_sigma NAN, no labels, no out_candidate.
CUTECPP_API struct cutecpp_sample_params cutecpp_sample_default_params(void);

// Text to latents: the whole denoising loop with the bundle's UNet.
//   cond   [n_cond_tokens, cross_attention_dim]    the UNet context of the prompt (float32, C order)
//   uncond [n_uncond_tokens, cross_attention_dim]  the unconditional context; may be NULL when the
//                                                   guidance scale is 1 (then only cond is evaluated)
//   out_latents [in_channels, latent_height, latent_width]
// The initial latent is cutecpp_rng_normal(seed, stream 0) times the sampler's initial
// sigma; euler_a and lcm add the noise of stream 1 + i at step i (0-based), so a run
// depends only on its inputs and parameters, not on threads. Per step, the (scaled)
// latent goes through the UNet for uncond and cond (one batch of 2 when the token counts
// match), the prediction is uncond + cfg_scale * (cond - uncond), then the sampler's
// update; where the bundle sets cutecpp.sampling.guidance_max_sigma, the steps whose sigma
// (cutecpp_sampler_schedule) is above it evaluate cond alone and use that prediction.
// out_latents is written only on success; a cancelled context stays usable.
CUTECPP_API cutecpp_status cutecpp_sample(struct cutecpp_context * ctx, const float * cond, int32_t n_cond_tokens,
                                          const float * uncond, int32_t n_uncond_tokens,
                                          struct cutecpp_sample_params params, float * out_latents);

// Standard normal floats: out[j] is number (offset + j) of the (seed, stream) sequence, for
// j < n (offset + n <= 2^64). Philox4x32-10 with key = seed and counter = (index / 4, stream),
// Box-Muller with portable log/sin/cos: the same bits on every machine and for any
// thread count or split of the sequence.
CUTECPP_API cutecpp_status cutecpp_rng_normal(uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, float * out);

// Parity tests and tools. The schedule of `sampler` at `steps` steps for the bundle's
// training schedule; any output may be NULL:
//   sigmas [steps + 1] (ending with 0; lcm: sqrt((1 - alphas_cumprod) / alphas_cumprod) at its
//   timesteps), timesteps [steps] (the UNet's timestep input), input_divisors [steps] (the UNet sees
//   latent / input_divisors[i]: sqrt(sigma^2 + 1) for euler and euler_a, else 1),
//   *init_noise_sigma (the initial latent is unit noise times it).
CUTECPP_API cutecpp_status cutecpp_sampler_schedule(const struct cutecpp_model * model, int32_t sampler, int32_t steps,
                                                    float * sigmas, float * timesteps, float * input_divisors,
                                                    float * init_noise_sigma);

// One sampler update at step `step` (0-based) of a `steps`-step run, on n floats: the next
// latent from `sample` and the (guided) model output. out may be sample.
//   noise: n standard normals for euler_a (every step) and lcm (all but the last); else may be NULL
//   state: n floats the caller keeps across one run's steps for dpmpp_2m_karras (the previous
//          denoised estimate: written at every step, read from step 1 on); else may be NULL
CUTECPP_API cutecpp_status cutecpp_sampler_step(const struct cutecpp_model * model, int32_t sampler, int32_t steps,
                                                int32_t step, const float * model_output, const float * sample,
                                                const float * noise, float * state, float * out, int64_t n);

// CUTECPP_CDEF_END

#ifdef __cplusplus
}
#endif

#endif  // CUTECPP_H
