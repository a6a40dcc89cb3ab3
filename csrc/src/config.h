// The bundle's configuration, read from its cutecpp.* keys (see
// docs/bundle-format.md). Everything a model needs is here; nothing is
// hard-coded per model.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cutecpp {

class GGUFFile;

constexpr uint32_t kFormatVersion = 1;       // newest bundle format this build reads
constexpr const char * kArchitecture = "cutecpp";

// A diffusers UNet2DConditionModel (SD 1.x, BK-SDM-style pruned, cute-mini).
struct UnetConfig {
    uint32_t in_channels = 0;
    uint32_t out_channels = 0;
    std::vector<uint32_t> block_out_channels;
    std::vector<std::string> down_block_types;  // CrossAttnDownBlock2D | DownBlock2D
    std::vector<std::string> up_block_types;    // CrossAttnUpBlock2D | UpBlock2D
    uint32_t layers_per_block = 0;
    bool mid_block = false;                      // UNetMidBlock2DCrossAttn or none
    std::vector<uint32_t> num_attention_heads;   // per level, heads (not head dim)
    std::vector<uint32_t> transformer_layers;    // per level, transformer blocks in each attention
    uint32_t cross_attention_dim = 0;
    uint32_t norm_num_groups = 0;
    float norm_eps = 0.0f;
    bool use_linear_projection = false;
    bool flip_sin_to_cos = false;
    uint32_t freq_shift = 0;
    uint32_t sample_size = 0;                    // latent side the model was trained at

    uint32_t time_embed_dim() const { return block_out_channels.at(0) * 4; }
};

// How a decoder undoes the latent scaling the UNet was trained with (diffusers'
// conventions): without per-channel statistics it sees
//     latents / scaling_factor + shift_factor,
// with them (latents_mean, latents_std: one value per latent channel)
//     latents * latents_std[c] / scaling_factor + latents_mean[c] + shift_factor.
struct LatentScaling {
    float scaling_factor = 1.0f;
    float shift_factor = 0.0f;
    std::vector<float> latents_mean;  // empty, or latent_channels values
    std::vector<float> latents_std;   // empty, or latent_channels values (> 0)

    // in, out: [n, channels, hw] floats, C order (may be the same buffer).
    void unscale(const float * in, float * out, int64_t n, int64_t channels, int64_t hw) const;
    // The exact inverse, what an encoder applies last (as diffusers pipelines do after
    // vae.encode()): (x - shift_factor) * scaling_factor, or per channel
    // (x - latents_mean[c] - shift_factor) * scaling_factor / latents_std[c].
    void scale(const float * in, float * out, int64_t n, int64_t channels, int64_t hw) const;
};

// A diffusers AutoencoderTiny decoder (TAESD-style): conv, ReLU, per stage
// `num_blocks` residual blocks then (except last) nearest upsampling and a conv.
struct TinyDecoderConfig {
    uint32_t latent_channels = 0;
    uint32_t out_channels = 0;
    std::vector<uint32_t> block_out_channels;  // per stage (equal in diffusers' DecoderTiny)
    std::vector<uint32_t> num_blocks;
    uint32_t upsampling_scaling_factor = 0;
    LatentScaling scaling;  // what the decoder undoes first

    uint32_t upscale() const;  // total: factor ^ (stages - 1)
};

// The decoder half of a diffusers AutoencoderKL (the SD VAE): post_quant_conv,
// conv_in, a mid block (ResNet, optional single-head attention, ResNet), one
// UpDecoderBlock2D per level (channels reversed, layers_per_block + 1 ResNets,
// nearest x2 upsampling and a conv except on the last), GroupNorm, SiLU, conv_out.
struct VaeDecoderConfig {
    uint32_t latent_channels = 0;
    uint32_t out_channels = 0;
    std::vector<uint32_t> block_out_channels;  // encoder order: the decoder runs them reversed
    uint32_t layers_per_block = 0;
    uint32_t norm_num_groups = 0;
    bool mid_block_add_attention = true;
    LatentScaling scaling;  // what the decoder undoes first

    uint32_t upscale() const { return 1u << (block_out_channels.size() - 1); }
};

// The encoder half of a diffusers AutoencoderTiny (EncoderTiny): the image mapped from
// [-1, 1] to [0, 1], a conv, then per stage (except the first) a stride-2 conv without
// bias and `num_blocks` residual blocks, then a conv to the latent channels.
struct TinyEncoderConfig {
    uint32_t in_channels = 0;
    uint32_t latent_channels = 0;
    std::vector<uint32_t> block_out_channels;  // equal at every stage (diffusers requires it)
    std::vector<uint32_t> num_blocks;
    LatentScaling scaling;  // applied last (LatentScaling::scale), the tiny decoder's inverse

    uint32_t downscale() const { return 1u << (block_out_channels.size() - 1); }
};

// The encoder half of a diffusers AutoencoderKL: conv_in, one DownEncoderBlock2D per
// level (layers_per_block ResNets, a stride-2 conv on the image padded right and
// bottom except on the last), the mid block, GroupNorm, SiLU, conv_out to
// 2 * latent_channels (mean and log-variance), quant_conv. The output is the mean.
struct VaeEncoderConfig {
    uint32_t in_channels = 0;
    uint32_t latent_channels = 0;
    std::vector<uint32_t> block_out_channels;
    uint32_t layers_per_block = 0;
    uint32_t norm_num_groups = 0;
    bool mid_block_add_attention = true;
    bool use_quant_conv = true;
    LatentScaling scaling;  // applied last (LatentScaling::scale), the VAE decoder's inverse

    uint32_t downscale() const { return 1u << (block_out_channels.size() - 1); }
};

// The alignment module (tools/alignment_ref.py): text-encoder states [T, in_dim]
// -> UNet cross-attention context [T, ctx_dim]. LayerNorm + Linear in, `layers`
// pre-norm transformer encoder layers (self-attention with `heads` heads,
// biased q/k/v/out; GELU feed-forward of width ff_mult * dim), LayerNorm +
// Linear out. Every LayerNorm uses norm_eps.
struct AlignmentConfig {
    uint32_t in_dim = 0;
    uint32_t dim = 0;
    uint32_t ctx_dim = 0;
    uint32_t layers = 0;   // 0 allowed: norm_in, proj_in, norm_out, proj_out only
    uint32_t heads = 0;    // divides dim
    uint32_t ff_mult = 0;
    float norm_eps = 0.0f;
};

// The model's training noise schedule and its sampling defaults (cutecpp.sampling.*);
// optional as a whole. Names and meanings follow diffusers' scheduler config.json.
// Best of several seeds: at most this many candidates (cutecpp.sampling.candidates, cutecpp_sample_params).
constexpr uint32_t kMaxCandidates = 16;

struct SamplingConfig {
    std::string prediction;        // epsilon | v_prediction | flow (rectified flow: x_t = (1 - t) x0 + t noise)
    uint32_t num_train_timesteps = 0;
    std::string beta_schedule;     // linear | scaled_linear (unused by flow models)
    double beta_start = 0.0;       // float64: diffusers keeps them as Python floats
    double beta_end = 0.0;
    std::string timestep_spacing;  // leading | linspace | trailing (euler, euler_a)
    uint32_t steps_offset = 0;
    double flow_shift = 1.0;       // FlowMatchEulerDiscreteScheduler's shift (flow models)
    std::string default_sampler;   // a sampler name that fits `prediction`
    uint32_t default_steps = 0;    // 1..1000
    float default_cfg = 0.0f;      // classifier-free guidance scale, 0..100
    // Steps whose sigma is above this run the prompt alone (unguided: one UNet evaluation of
    // batch 1); absent: every step is guided. Finite, >= 0.
    std::optional<float> guidance_max_sigma;
    // Best of several seeds (docs/bundle-format.md): cutecpp_sample draws `candidates` seeds to the first
    // step whose sigma is at most verify_sigma, keeps the one the verifier finds the asked labels in
    // most surely, and finishes it. Absent: 1 candidate; above 1 needs a verifier component.
    std::optional<uint32_t> candidates;  // 1..16
    float verify_sigma = 0.0f;           // finite, >= 0; in the file exactly when candidates is
};

// The text encoder a model was trained with (cutecpp.text_encoder.*), optional as a whole:
// the pipeline refuses an encoder with another source or depth (docs/text-encoder.md).
struct TextEncoderConfig {
    std::string sha256;   // of the source GGUF, 64 lowercase hex digits
    uint32_t layers = 0;  // blocks kept, 1..1024; the states are the final norm of the last one
};

// A latent verifier (tools/verifier.py): diffusers' EncoderTiny over the latent and its noise level
// (in_channels + 1 channels: the sigma filled in as the last one) to one map per label, whose largest
// value is the label's logit. `body` is that EncoderTiny (in_channels + 1 in, labels.size() out; no
// latent scaling).
struct VerifierConfig {
    uint32_t in_channels = 0;         // the latent channels it reads (the UNet's)
    std::vector<std::string> labels;  // 1..4096 distinct names, "category:id" for cute-mini
    TinyEncoderConfig body;
};

struct BundleConfig {
    uint32_t format_version = 0;
    std::string model_id;
    std::string name;     // general.name, may be empty
    std::string license;  // general.license, may be empty
    std::vector<std::string> components;
    std::optional<UnetConfig> unet;
    std::optional<TinyDecoderConfig> tiny_decoder;
    std::optional<VaeDecoderConfig> vae_decoder;
    std::optional<TinyEncoderConfig> tiny_encoder;
    std::optional<VaeEncoderConfig> vae_encoder;
    std::optional<AlignmentConfig> alignment;
    std::optional<VerifierConfig> verifier;
    std::optional<SamplingConfig> sampling;  // present when the file has cutecpp.sampling.* keys
    std::optional<TextEncoderConfig> text_encoder;  // present when it has cutecpp.text_encoder.* keys
};

// Reads and validates every cutecpp.* key; an unknown cutecpp.* key, a
// missing one, a wrong type or an unsupported value is an error naming it.
BundleConfig read_config(const GGUFFile & file);

// Torch-order shape of a tensor (outermost first), as in the checkpoint.
using Shape = std::vector<int64_t>;
using TensorShapes = std::map<std::string, Shape>;

// Every tensor the config implies, named as in the diffusers checkpoint with
// the component prefix ("unet.down_blocks.0.resnets.0.conv1.weight").
TensorShapes expected_tensors(const BundleConfig & config);
void add_unet_tensors(const UnetConfig & c, const std::string & prefix, TensorShapes & out);
void add_tiny_decoder_tensors(const TinyDecoderConfig & c, const std::string & prefix, TensorShapes & out);
void add_vae_decoder_tensors(const VaeDecoderConfig & c, const std::string & prefix, TensorShapes & out);
void add_tiny_encoder_tensors(const TinyEncoderConfig & c, const std::string & prefix, TensorShapes & out);
void add_vae_encoder_tensors(const VaeEncoderConfig & c, const std::string & prefix, TensorShapes & out);
void add_alignment_tensors(const AlignmentConfig & c, const std::string & prefix, TensorShapes & out);
void add_verifier_tensors(const VerifierConfig & c, const std::string & prefix, TensorShapes & out);

std::string config_json(const BundleConfig & config);

}  // namespace cutecpp
