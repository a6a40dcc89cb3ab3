#include "config.h"

#include "error.h"
#include "gguf_file.h"
#include "json.h"
#include "sampler.h"

#include <algorithm>
#include <cmath>

namespace cutecpp {

namespace {

// Bounds that no real model reaches; beyond them a value is corrupt, and
// bounding it keeps every size computed from the config far from overflow.
constexpr uint32_t kMaxChannels = 8192;
constexpr uint32_t kMaxLevels = 8;
constexpr uint32_t kMaxLayersPerBlock = 8;
constexpr uint32_t kMaxTransformerLayers = 8;
// Transformer blocks in a whole UNet (SD 1.x has 16, SDXL 70). ~20 graph nodes each (cute-mini's plan:
// 305 nodes with 7 blocks, 438 with 14), so that the UNet's graph stays well inside context.cpp's
// kMaxGraphNodes whatever else a bundle within these limits holds.
constexpr uint32_t kMaxTransformerBlocks = 128;
constexpr uint32_t kMaxHeads = 128;
constexpr uint32_t kMaxLatentChannels = 64;
constexpr uint32_t kMaxSampleSize = 1024;
constexpr uint32_t kMaxAlignmentLayers = 32;
constexpr uint32_t kMaxFeedForwardMult = 8;
constexpr size_t kMaxIdLength = 256;
constexpr size_t kMaxVerifierLabels = 4096;
constexpr size_t kMaxLabelLength = 64;

[[noreturn]] void bad_value(const std::string & key, const std::string & why) {
    fail(CUTECPP_ERR_UNSUPPORTED, "key '" + key + "': " + why);
}

uint32_t u32_in(const GGUFFile & f, const std::string & key, uint32_t lo, uint32_t hi) {
    const uint32_t v = f.get_u32(key);
    if (v < lo || v > hi) {
        bad_value(key, "value " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "]");
    }
    return v;
}

std::string one_of(const GGUFFile & f, const std::string & key, const std::vector<std::string> & allowed) {
    const std::string v = f.get_string(key);
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
        std::string list;
        for (const auto & a : allowed) list += (list.empty() ? "" : ", ") + a;
        bad_value(key, "unsupported value '" + v + "' (supported: " + list + ")");
    }
    return v;
}

// A decoder's latent scaling (LatentScaling in config.h); the per-channel statistics are optional
// but come together, one value per latent channel.
LatentScaling read_latent_scaling(const GGUFFile & f, const std::string & p, uint32_t latent_channels) {
    LatentScaling s;
    s.scaling_factor = f.get_f32(p + "scaling_factor");
    s.shift_factor = f.get_f32(p + "shift_factor");
    if (!(s.scaling_factor > 0.0f && s.scaling_factor < 1000.0f)) bad_value(p + "scaling_factor", "must be in (0, 1000)");
    if (!(s.shift_factor > -1000.0f && s.shift_factor < 1000.0f)) bad_value(p + "shift_factor", "must be in (-1000, 1000)");
    const bool has_mean = f.has(p + "latents_mean");
    if (has_mean != f.has(p + "latents_std")) {
        bad_value(p + (has_mean ? "latents_std" : "latents_mean"), "missing: latents_mean and latents_std come together");
    }
    if (!has_mean) return s;
    s.latents_mean = f.get_f32_array(p + "latents_mean");
    s.latents_std = f.get_f32_array(p + "latents_std");
    if (s.latents_mean.size() != latent_channels) {
        bad_value(p + "latents_mean", "has " + std::to_string(s.latents_mean.size()) + " values for " + std::to_string(latent_channels) + " latent channels");
    }
    if (s.latents_std.size() != latent_channels) {
        bad_value(p + "latents_std", "has " + std::to_string(s.latents_std.size()) + " values for " + std::to_string(latent_channels) + " latent channels");
    }
    for (uint32_t i = 0; i < latent_channels; ++i) {
        if (!(s.latents_mean[i] > -1000.0f && s.latents_mean[i] < 1000.0f)) bad_value(p + "latents_mean", "values must be in (-1000, 1000)");
        if (!(s.latents_std[i] > 0.0f && s.latents_std[i] < 1000.0f)) bad_value(p + "latents_std", "values must be in (0, 1000)");
    }
    return s;
}

// The config JSON's latent scaling fields (latents_mean/latents_std null when absent).
void scaling_fields(const LatentScaling & s, std::vector<std::pair<std::string, std::string>> & fields) {
    using json::array;
    using json::num;
    const auto f = [](float v) { return num(v); };
    fields.emplace_back("scaling_factor", num(s.scaling_factor));
    fields.emplace_back("shift_factor", num(s.shift_factor));
    fields.emplace_back("latents_mean", s.latents_mean.empty() ? "null" : array(s.latents_mean, f));
    fields.emplace_back("latents_std", s.latents_std.empty() ? "null" : array(s.latents_std, f));
}

// One level's channel count: in range and split evenly into GroupNorm groups.
void check_level_channels(const std::string & key, uint32_t ch, const std::string & at, uint32_t groups) {
    if (ch < 1 || ch > kMaxChannels) {
        bad_value(key, "channel count " + std::to_string(ch) + at + " is outside [1, " + std::to_string(kMaxChannels) + "]");
    }
    if (ch % groups != 0) {
        bad_value(key, "channel count " + std::to_string(ch) + at + " is not divisible by norm_num_groups " +
                           std::to_string(groups));
    }
}

UnetConfig read_unet(const GGUFFile & f) {
    const std::string p = "cutecpp.unet.";
    UnetConfig c;
    c.in_channels = u32_in(f, p + "in_channels", 1, kMaxLatentChannels);
    c.out_channels = u32_in(f, p + "out_channels", 1, kMaxLatentChannels);
    c.layers_per_block = u32_in(f, p + "layers_per_block", 1, kMaxLayersPerBlock);
    c.cross_attention_dim = u32_in(f, p + "cross_attention_dim", 1, kMaxChannels);
    c.norm_num_groups = u32_in(f, p + "norm_num_groups", 1, kMaxChannels);
    c.freq_shift = u32_in(f, p + "freq_shift", 0, 1);
    c.sample_size = u32_in(f, p + "sample_size", 1, kMaxSampleSize);
    c.flip_sin_to_cos = f.get_bool(p + "flip_sin_to_cos");
    c.use_linear_projection = f.get_bool(p + "use_linear_projection");
    c.norm_eps = f.get_f32(p + "norm_eps");
    if (!(c.norm_eps > 0.0f && c.norm_eps < 1.0f)) bad_value(p + "norm_eps", "must be in (0, 1)");
    c.mid_block = one_of(f, p + "mid_block_type", {"UNetMidBlock2DCrossAttn", "none"}) != "none";

    c.block_out_channels = f.get_u32_array(p + "block_out_channels");
    const size_t n = c.block_out_channels.size();
    if (n < 1 || n > kMaxLevels) bad_value(p + "block_out_channels", "needs 1 to " + std::to_string(kMaxLevels) + " levels, got " + std::to_string(n));
    // One number for every level, or one per level (diffusers' order: the down blocks' levels; the mid
    // block takes the last, the up blocks the reversed list).
    const std::string tl = p + "transformer_layers_per_block";
    c.transformer_layers = f.is_array(tl) ? f.get_u32_array(tl) : std::vector<uint32_t>(n, f.get_u32(tl));
    for (const uint32_t t : c.transformer_layers) {
        if (t < 1 || t > kMaxTransformerLayers) bad_value(tl, std::to_string(t) + " transformer blocks: must be 1 to " + std::to_string(kMaxTransformerLayers));
    }
    c.num_attention_heads = f.get_u32_array(p + "num_attention_heads");
    c.down_block_types = f.get_string_array(p + "down_block_types");
    c.up_block_types = f.get_string_array(p + "up_block_types");
    const auto same_len = [&](const std::string & key, size_t len) {
        if (len != n) bad_value(p + key, "has " + std::to_string(len) + " entries but block_out_channels has " + std::to_string(n));
    };
    same_len("num_attention_heads", c.num_attention_heads.size());
    same_len("down_block_types", c.down_block_types.size());
    same_len("up_block_types", c.up_block_types.size());
    same_len("transformer_layers_per_block", c.transformer_layers.size());

    for (size_t i = 0; i < n; ++i) {
        const uint32_t ch = c.block_out_channels[i];
        const uint32_t heads = c.num_attention_heads[i];
        const std::string at = " at level " + std::to_string(i);
        check_level_channels(p + "block_out_channels", ch, at, c.norm_num_groups);
        if (heads < 1 || heads > kMaxHeads || ch % heads != 0) bad_value(p + "num_attention_heads", std::to_string(heads) + " heads" + at + " do not divide " + std::to_string(ch) + " channels");
        const std::string & down = c.down_block_types[i];
        const std::string & up = c.up_block_types[i];
        if (down != "CrossAttnDownBlock2D" && down != "DownBlock2D") bad_value(p + "down_block_types", "unsupported block type '" + down + "'");
        if (up != "CrossAttnUpBlock2D" && up != "UpBlock2D") bad_value(p + "up_block_types", "unsupported block type '" + up + "'");
    }
    uint64_t blocks = c.mid_block ? c.transformer_layers[n - 1] : 0;
    for (size_t i = 0; i < n; ++i) {
        if (c.down_block_types[i] == "CrossAttnDownBlock2D") blocks += uint64_t(c.layers_per_block) * c.transformer_layers[i];
        if (c.up_block_types[i] == "CrossAttnUpBlock2D") blocks += uint64_t(c.layers_per_block + 1) * c.transformer_layers[n - 1 - i];
    }
    if (blocks > kMaxTransformerBlocks) bad_value(tl, std::to_string(blocks) + " transformer blocks in all: at most " + std::to_string(kMaxTransformerBlocks));
    return c;
}

// Stage channels of a tiny autoencoder half, 1 to 8192 each, with `num_blocks` entries of 0-8
// blocks. The encoder's must be one count repeated (diffusers' EncoderTiny only runs with equal
// stages); the decoder's may change from stage to stage (the conv closing a stage maps its width to
// the next one's: tools/latent_decoder.py; equal stages are diffusers' DecoderTiny).
void check_tiny_stages(const std::string & p, const std::vector<uint32_t> & channels, const std::vector<uint32_t> & blocks,
                       const char * equal_for) {
    const size_t n = channels.size();
    if (n < 1 || n > kMaxLevels) bad_value(p + "block_out_channels", "needs 1 to " + std::to_string(kMaxLevels) + " stages");
    if (blocks.size() != n) bad_value(p + "num_blocks", "has " + std::to_string(blocks.size()) + " entries but block_out_channels has " + std::to_string(n));
    for (size_t i = 0; i < n; ++i) {
        if (channels[i] < 1 || channels[i] > kMaxChannels) bad_value(p + "block_out_channels", "channel counts must be 1 to 8192");
        if (equal_for != nullptr && channels[i] != channels[0]) {
            bad_value(p + "block_out_channels", std::string("must be one channel count repeated: diffusers' ") + equal_for + " only runs with equal stages");
        }
        if (blocks[i] > kMaxLayersPerBlock) bad_value(p + "num_blocks", "at most " + std::to_string(kMaxLayersPerBlock) + " blocks per stage");
    }
}

TinyDecoderConfig read_tiny_decoder(const GGUFFile & f) {
    const std::string p = "cutecpp.tiny_decoder.";
    TinyDecoderConfig c;
    c.latent_channels = u32_in(f, p + "latent_channels", 1, kMaxLatentChannels);
    c.out_channels = u32_in(f, p + "out_channels", 1, 4);
    c.upsampling_scaling_factor = u32_in(f, p + "upsampling_scaling_factor", 1, 4);
    one_of(f, p + "act_fn", {"relu"});
    one_of(f, p + "upsample_fn", {"nearest"});
    c.scaling = read_latent_scaling(f, p, c.latent_channels);
    c.block_out_channels = f.get_u32_array(p + "block_out_channels");
    c.num_blocks = f.get_u32_array(p + "num_blocks");
    check_tiny_stages(p, c.block_out_channels, c.num_blocks, nullptr);
    if (c.upscale() > 64) bad_value(p + "upsampling_scaling_factor", "total upsampling above 64");
    return c;
}

VaeDecoderConfig read_vae_decoder(const GGUFFile & f) {
    const std::string p = "cutecpp.vae_decoder.";
    VaeDecoderConfig c;
    c.latent_channels = u32_in(f, p + "latent_channels", 1, kMaxLatentChannels);
    c.out_channels = u32_in(f, p + "out_channels", 1, 4);
    c.layers_per_block = u32_in(f, p + "layers_per_block", 1, kMaxLayersPerBlock);
    c.norm_num_groups = u32_in(f, p + "norm_num_groups", 1, kMaxChannels);
    one_of(f, p + "act_fn", {"silu"});
    c.mid_block_add_attention = f.get_bool(p + "mid_block_add_attention");
    c.scaling = read_latent_scaling(f, p, c.latent_channels);
    c.block_out_channels = f.get_u32_array(p + "block_out_channels");
    const size_t n = c.block_out_channels.size();
    if (n < 1 || n > kMaxLevels) bad_value(p + "block_out_channels", "needs 1 to " + std::to_string(kMaxLevels) + " levels, got " + std::to_string(n));
    for (size_t i = 0; i < n; ++i) {
        const uint32_t ch = c.block_out_channels[i];
        const std::string at = " at level " + std::to_string(i);
        check_level_channels(p + "block_out_channels", ch, at, c.norm_num_groups);
    }
    return c;
}

TinyEncoderConfig read_tiny_encoder(const GGUFFile & f) {
    const std::string p = "cutecpp.tiny_encoder.";
    TinyEncoderConfig c;
    c.in_channels = u32_in(f, p + "in_channels", 1, 4);
    c.latent_channels = u32_in(f, p + "latent_channels", 1, kMaxLatentChannels);
    one_of(f, p + "act_fn", {"relu"});
    c.scaling = read_latent_scaling(f, p, c.latent_channels);
    c.block_out_channels = f.get_u32_array(p + "block_out_channels");
    c.num_blocks = f.get_u32_array(p + "num_blocks");
    check_tiny_stages(p, c.block_out_channels, c.num_blocks, "EncoderTiny");
    return c;
}

VerifierConfig read_verifier(const GGUFFile & f) {
    const std::string p = "cutecpp.verifier.";
    VerifierConfig c;
    c.in_channels = u32_in(f, p + "in_channels", 1, kMaxLatentChannels);
    c.labels = f.get_string_array(p + "labels");
    if (c.labels.empty() || c.labels.size() > kMaxVerifierLabels) {
        bad_value(p + "labels", "needs 1 to " + std::to_string(kMaxVerifierLabels) + " labels, got " +
                                    std::to_string(c.labels.size()));
    }
    std::vector<std::string> sorted = c.labels;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); ++i) {
        if (sorted[i].empty() || sorted[i].size() > kMaxLabelLength) bad_value(p + "labels", "each label must be 1 to 64 bytes");
        if (i > 0 && sorted[i] == sorted[i - 1]) bad_value(p + "labels", "lists '" + sorted[i] + "' twice");
    }
    one_of(f, p + "act_fn", {"relu"});
    c.body.in_channels = c.in_channels + 1;
    c.body.latent_channels = static_cast<uint32_t>(c.labels.size());
    c.body.block_out_channels = f.get_u32_array(p + "block_out_channels");
    c.body.num_blocks = f.get_u32_array(p + "num_blocks");
    check_tiny_stages(p, c.body.block_out_channels, c.body.num_blocks, "EncoderTiny");
    return c;
}

VaeEncoderConfig read_vae_encoder(const GGUFFile & f) {
    const std::string p = "cutecpp.vae_encoder.";
    VaeEncoderConfig c;
    c.in_channels = u32_in(f, p + "in_channels", 1, 4);
    c.latent_channels = u32_in(f, p + "latent_channels", 1, kMaxLatentChannels);
    c.layers_per_block = u32_in(f, p + "layers_per_block", 1, kMaxLayersPerBlock);
    c.norm_num_groups = u32_in(f, p + "norm_num_groups", 1, kMaxChannels);
    one_of(f, p + "act_fn", {"silu"});
    c.mid_block_add_attention = f.get_bool(p + "mid_block_add_attention");
    c.use_quant_conv = f.get_bool(p + "use_quant_conv");
    c.scaling = read_latent_scaling(f, p, c.latent_channels);
    c.block_out_channels = f.get_u32_array(p + "block_out_channels");
    const size_t n = c.block_out_channels.size();
    if (n < 1 || n > kMaxLevels) bad_value(p + "block_out_channels", "needs 1 to " + std::to_string(kMaxLevels) + " levels, got " + std::to_string(n));
    for (size_t i = 0; i < n; ++i) {
        check_level_channels(p + "block_out_channels", c.block_out_channels[i], " at level " + std::to_string(i), c.norm_num_groups);
    }
    return c;
}

// An encoder next to its decoder must make the decoder's latents: same latent channels and
// the same latent scaling (the encoder applies its inverse).
void check_pair(const std::string & encoder, uint32_t enc_channels, const LatentScaling & enc,
                const std::string & decoder, uint32_t dec_channels, const LatentScaling & dec) {
    const std::string e = "cutecpp." + encoder + ".", d = "cutecpp." + decoder + ".";
    if (enc_channels != dec_channels) {
        bad_value(e + "latent_channels", std::to_string(enc_channels) + " differs from " + d + "latent_channels " +
                                             std::to_string(dec_channels) + ": the encoder must make the decoder's latents");
    }
    const auto differs = [&](const std::string & key) {
        bad_value(e + key, "differs from " + d + key + ": the encoder must make the decoder's latents");
    };
    if (enc.scaling_factor != dec.scaling_factor) differs("scaling_factor");
    if (enc.shift_factor != dec.shift_factor) differs("shift_factor");
    if (enc.latents_mean != dec.latents_mean) differs("latents_mean");
    if (enc.latents_std != dec.latents_std) differs("latents_std");
}

AlignmentConfig read_alignment(const GGUFFile & f) {
    const std::string p = "cutecpp.alignment.";
    AlignmentConfig c;
    c.in_dim = u32_in(f, p + "in_dim", 1, kMaxChannels);
    c.dim = u32_in(f, p + "dim", 1, kMaxChannels);
    c.ctx_dim = u32_in(f, p + "ctx_dim", 1, kMaxChannels);
    c.layers = u32_in(f, p + "layers", 0, kMaxAlignmentLayers);
    c.heads = u32_in(f, p + "heads", 1, kMaxHeads);
    c.ff_mult = u32_in(f, p + "ff_mult", 1, kMaxFeedForwardMult);
    c.norm_eps = f.get_f32(p + "norm_eps");
    if (!(c.norm_eps > 0.0f && c.norm_eps < 1.0f)) bad_value(p + "norm_eps", "must be in (0, 1)");
    if (c.dim % c.heads != 0) {
        bad_value(p + "heads", std::to_string(c.heads) + " heads do not divide dim " + std::to_string(c.dim));
    }
    return c;
}

constexpr uint32_t kMaxTrainTimesteps = 10000;
constexpr const char * kSamplingPrefix = "cutecpp.sampling.";

bool has_keys(const GGUFFile & f, const char * prefix) {
    for (int64_t i = 0; i < f.n_keys(); ++i) {
        if (f.key_name(i).rfind(prefix, 0) == 0) return true;
    }
    return false;
}

constexpr const char * kTextEncoderPrefix = "cutecpp.text_encoder.";

TextEncoderConfig read_text_encoder(const GGUFFile & f) {
    const std::string p = kTextEncoderPrefix;
    TextEncoderConfig c;
    c.sha256 = f.get_string(p + "sha256");
    const bool hex = c.sha256.size() == 64 && std::all_of(c.sha256.begin(), c.sha256.end(), [](char ch) {
        return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
    });
    if (!hex) bad_value(p + "sha256", "must be 64 lowercase hex digits");
    c.layers = u32_in(f, p + "layers", 1, 1024);
    return c;
}

SamplingConfig read_sampling(const GGUFFile & f) {
    const std::string p = kSamplingPrefix;
    SamplingConfig c;
    c.prediction = one_of(f, p + "prediction", {"epsilon", "v_prediction", "flow"});
    c.num_train_timesteps = u32_in(f, p + "num_train_timesteps", 2, kMaxTrainTimesteps);
    c.beta_schedule = one_of(f, p + "beta_schedule", {"linear", "scaled_linear"});
    c.beta_start = f.get_f64(p + "beta_start");
    c.beta_end = f.get_f64(p + "beta_end");
    if (!(c.beta_start > 0.0 && c.beta_start <= c.beta_end && c.beta_end < 1.0)) {
        bad_value(p + "beta_start", "needs 0 < beta_start <= beta_end < 1, got " + json::num_exact(c.beta_start) +
                                        " and " + json::num_exact(c.beta_end));
    }
    c.timestep_spacing = one_of(f, p + "timestep_spacing", {"leading", "linspace", "trailing"});
    c.steps_offset = u32_in(f, p + "steps_offset", 0, c.num_train_timesteps - 1);
    c.flow_shift = f.get_f64(p + "flow_shift");
    if (!(c.flow_shift > 0.0 && c.flow_shift <= 100.0)) bad_value(p + "flow_shift", "must be in (0, 100]");
    c.default_sampler = f.get_string(p + "default_sampler");
    const int32_t sampler = sampler_id(c.default_sampler);
    if (sampler < 0) {
        bad_value(p + "default_sampler", "unknown sampler '" + c.default_sampler + "' (supported: " + sampler_list() + ")");
    }
    std::string why;
    if (!sampler_fits(c, static_cast<Sampler>(sampler), &why)) bad_value(p + "default_sampler", why);
    c.default_steps = u32_in(f, p + "default_steps", 1, kMaxSteps);
    c.default_cfg = f.get_f32(p + "default_cfg");
    if (!(c.default_cfg >= 0.0f && c.default_cfg <= 100.0f)) bad_value(p + "default_cfg", "must be in [0, 100]");
    if (f.has(p + "guidance_max_sigma")) {  // optional: absent, every step is guided
        const float sigma = f.get_f32(p + "guidance_max_sigma");
        if (!(std::isfinite(sigma) && sigma >= 0.0f)) {
            bad_value(p + "guidance_max_sigma", "must be a finite number >= 0 (leave the key out to guide every step)");
        }
        c.guidance_max_sigma = sigma;
    }
    if (f.has(p + "candidates") || f.has(p + "verify_sigma")) {  // optional, together: best of several seeds
        c.candidates = u32_in(f, p + "candidates", 1, kMaxCandidates);
        c.verify_sigma = f.get_f32(p + "verify_sigma");
        if (!(std::isfinite(c.verify_sigma) && c.verify_sigma >= 0.0f)) {
            bad_value(p + "verify_sigma", "must be a finite number >= 0");
        }
    }
    try {  // the defaults must make a schedule (lcm: at most 50 steps, ...)
        make_schedule(c, static_cast<Sampler>(sampler), static_cast<int>(c.default_steps));
    } catch (const Error & e) {
        bad_value(p + "default_steps", e.what());
    }
    return c;
}

}  // namespace

void LatentScaling::scale(const float * in, float * out, int64_t n, int64_t channels, int64_t hw) const {
    const bool per_channel = !latents_mean.empty();
    for (int64_t b = 0; b < n; ++b) {
        for (int64_t c = 0; c < channels; ++c) {
            const float sub = (per_channel ? latents_mean[c] : 0.0f) + shift_factor;
            const float mul = scaling_factor / (per_channel ? latents_std[c] : 1.0f);
            const int64_t at = (b * channels + c) * hw;
            for (int64_t i = 0; i < hw; ++i) out[at + i] = (in[at + i] - sub) * mul;
        }
    }
}

void LatentScaling::unscale(const float * in, float * out, int64_t n, int64_t channels, int64_t hw) const {
    const bool per_channel = !latents_mean.empty();
    for (int64_t b = 0; b < n; ++b) {
        for (int64_t c = 0; c < channels; ++c) {
            const float mul = (per_channel ? latents_std[c] : 1.0f) / scaling_factor;
            const float add = (per_channel ? latents_mean[c] : 0.0f) + shift_factor;
            const int64_t at = (b * channels + c) * hw;
            for (int64_t i = 0; i < hw; ++i) out[at + i] = in[at + i] * mul + add;
        }
    }
}

uint32_t TinyDecoderConfig::upscale() const {
    uint32_t f = 1;
    for (size_t i = 1; i < block_out_channels.size() && f <= 64; ++i) f *= upsampling_scaling_factor;
    return f;
}

BundleConfig read_config(const GGUFFile & f) {
    BundleConfig c;
    const std::string arch = f.get_string("general.architecture");
    if (arch != kArchitecture) {
        fail(CUTECPP_ERR_MODEL, "general.architecture is '" + arch + "', expected '" + kArchitecture +
                                    "': not a cutecpp model bundle");
    }
    c.format_version = f.get_u32("cutecpp.format_version");
    if (c.format_version < 1 || c.format_version > kFormatVersion) {
        fail(CUTECPP_ERR_UNSUPPORTED, "bundle format version " + std::to_string(c.format_version) +
                                          " is not supported (this build reads 1 to " + std::to_string(kFormatVersion) +
                                          "); upgrade cutecpp");
    }
    c.model_id = f.get_string("cutecpp.model_id");
    if (c.model_id.empty() || c.model_id.size() > kMaxIdLength) bad_value("cutecpp.model_id", "must be 1 to 256 bytes");
    if (f.has("general.name")) c.name = f.get_string("general.name");
    if (f.has("general.license")) c.license = f.get_string("general.license");

    c.components = f.get_string_array("cutecpp.components");
    if (c.components.empty()) bad_value("cutecpp.components", "lists no component");
    for (const auto & comp : c.components) {
        if (std::count(c.components.begin(), c.components.end(), comp) > 1) bad_value("cutecpp.components", "lists '" + comp + "' twice");
        if (comp == "unet") {
            c.unet = read_unet(f);
        } else if (comp == "tiny_decoder") {
            c.tiny_decoder = read_tiny_decoder(f);
        } else if (comp == "vae_decoder") {
            c.vae_decoder = read_vae_decoder(f);
        } else if (comp == "tiny_encoder") {
            c.tiny_encoder = read_tiny_encoder(f);
        } else if (comp == "vae_encoder") {
            c.vae_encoder = read_vae_encoder(f);
        } else if (comp == "alignment") {
            c.alignment = read_alignment(f);
        } else if (comp == "verifier") {
            c.verifier = read_verifier(f);
        } else {
            bad_value("cutecpp.components", "unknown component '" + comp +
                                                "' (supported: unet, tiny_decoder, vae_decoder, tiny_encoder, vae_encoder, alignment, verifier)");
        }
    }
    if (c.tiny_encoder && c.tiny_decoder) {
        check_pair("tiny_encoder", c.tiny_encoder->latent_channels, c.tiny_encoder->scaling, "tiny_decoder",
                   c.tiny_decoder->latent_channels, c.tiny_decoder->scaling);
    }
    if (c.vae_encoder && c.vae_decoder) {
        check_pair("vae_encoder", c.vae_encoder->latent_channels, c.vae_encoder->scaling, "vae_decoder",
                   c.vae_decoder->latent_channels, c.vae_decoder->scaling);
    }

    if (c.verifier && c.unet && c.verifier->in_channels != c.unet->in_channels) {
        bad_value("cutecpp.verifier.in_channels", "is " + std::to_string(c.verifier->in_channels) + " but the unet's latents have " +
                                                      std::to_string(c.unet->in_channels) + " channels");
    }
    if (has_keys(f, kSamplingPrefix)) c.sampling = read_sampling(f);
    if (c.sampling && c.sampling->candidates.value_or(1) > 1 && !c.verifier) {
        bad_value("cutecpp.sampling.candidates", "is " + std::to_string(*c.sampling->candidates) +
                                                     ", but the bundle has no verifier component to choose among them");
    }
    if (has_keys(f, kTextEncoderPrefix)) c.text_encoder = read_text_encoder(f);

    // Strict: a cutecpp.* key this build does not read is a file from another
    // format version or a typo, and silently ignoring it could draw garbage.
    for (int64_t i = 0; i < f.n_keys(); ++i) {
        const std::string key = f.key_name(i);
        if (key.rfind("cutecpp.", 0) == 0 && f.keys_read().count(key) == 0) {
            fail(CUTECPP_ERR_MODEL, "unknown key '" + key + "' for bundle format version " + std::to_string(c.format_version));
        }
    }
    return c;
}

TensorShapes expected_tensors(const BundleConfig & config) {
    TensorShapes out;
    if (config.unet) add_unet_tensors(*config.unet, "unet.", out);
    if (config.tiny_decoder) add_tiny_decoder_tensors(*config.tiny_decoder, "tiny_decoder.", out);
    if (config.vae_decoder) add_vae_decoder_tensors(*config.vae_decoder, "vae_decoder.", out);
    if (config.tiny_encoder) add_tiny_encoder_tensors(*config.tiny_encoder, "tiny_encoder.", out);
    if (config.vae_encoder) add_vae_encoder_tensors(*config.vae_encoder, "vae_encoder.", out);
    if (config.alignment) add_alignment_tensors(*config.alignment, "alignment.", out);
    if (config.verifier) add_verifier_tensors(*config.verifier, "verifier.", out);
    return out;
}

std::string config_json(const BundleConfig & c) {
    using namespace json;
    const auto u = [](uint32_t v) { return std::to_string(v); };
    const auto s = [](const std::string & v) { return str(v); };
    std::vector<std::pair<std::string, std::string>> comps;
    if (c.unet) {
        const UnetConfig & n = *c.unet;
        comps.emplace_back("unet", object({
            {"in_channels", u(n.in_channels)},
            {"out_channels", u(n.out_channels)},
            {"block_out_channels", array(n.block_out_channels, u)},
            {"down_block_types", array(n.down_block_types, s)},
            {"up_block_types", array(n.up_block_types, s)},
            {"layers_per_block", u(n.layers_per_block)},
            {"mid_block_type", str(n.mid_block ? "UNetMidBlock2DCrossAttn" : "none")},
            {"num_attention_heads", array(n.num_attention_heads, u)},
            {"cross_attention_dim", u(n.cross_attention_dim)},
            {"norm_num_groups", u(n.norm_num_groups)},
            {"norm_eps", num(n.norm_eps)},
            {"use_linear_projection", n.use_linear_projection ? "true" : "false"},
            {"flip_sin_to_cos", n.flip_sin_to_cos ? "true" : "false"},
            {"freq_shift", u(n.freq_shift)},
            {"transformer_layers_per_block", array(n.transformer_layers, u)},
            {"sample_size", u(n.sample_size)},
        }));
    }
    if (c.tiny_decoder) {
        const TinyDecoderConfig & d = *c.tiny_decoder;
        std::vector<std::pair<std::string, std::string>> fields = {
            {"latent_channels", u(d.latent_channels)},
            {"out_channels", u(d.out_channels)},
            {"block_out_channels", array(d.block_out_channels, u)},
            {"num_blocks", array(d.num_blocks, u)},
            {"upsampling_scaling_factor", u(d.upsampling_scaling_factor)},
            {"act_fn", str("relu")},
            {"upsample_fn", str("nearest")},
        };
        scaling_fields(d.scaling, fields);
        comps.emplace_back("tiny_decoder", object(fields));
    }
    if (c.vae_decoder) {
        const VaeDecoderConfig & d = *c.vae_decoder;
        std::vector<std::pair<std::string, std::string>> fields = {
            {"latent_channels", u(d.latent_channels)},
            {"out_channels", u(d.out_channels)},
            {"block_out_channels", array(d.block_out_channels, u)},
            {"layers_per_block", u(d.layers_per_block)},
            {"norm_num_groups", u(d.norm_num_groups)},
            {"act_fn", str("silu")},
            {"mid_block_add_attention", d.mid_block_add_attention ? "true" : "false"},
        };
        scaling_fields(d.scaling, fields);
        comps.emplace_back("vae_decoder", object(fields));
    }
    if (c.tiny_encoder) {
        const TinyEncoderConfig & e = *c.tiny_encoder;
        std::vector<std::pair<std::string, std::string>> fields = {
            {"in_channels", u(e.in_channels)},
            {"latent_channels", u(e.latent_channels)},
            {"block_out_channels", array(e.block_out_channels, u)},
            {"num_blocks", array(e.num_blocks, u)},
            {"act_fn", str("relu")},
        };
        scaling_fields(e.scaling, fields);
        comps.emplace_back("tiny_encoder", object(fields));
    }
    if (c.vae_encoder) {
        const VaeEncoderConfig & e = *c.vae_encoder;
        std::vector<std::pair<std::string, std::string>> fields = {
            {"in_channels", u(e.in_channels)},
            {"latent_channels", u(e.latent_channels)},
            {"block_out_channels", array(e.block_out_channels, u)},
            {"layers_per_block", u(e.layers_per_block)},
            {"norm_num_groups", u(e.norm_num_groups)},
            {"act_fn", str("silu")},
            {"mid_block_add_attention", e.mid_block_add_attention ? "true" : "false"},
            {"use_quant_conv", e.use_quant_conv ? "true" : "false"},
        };
        scaling_fields(e.scaling, fields);
        comps.emplace_back("vae_encoder", object(fields));
    }
    if (c.alignment) {
        const AlignmentConfig & a = *c.alignment;
        comps.emplace_back("alignment", object({
            {"in_dim", u(a.in_dim)},
            {"dim", u(a.dim)},
            {"ctx_dim", u(a.ctx_dim)},
            {"layers", u(a.layers)},
            {"heads", u(a.heads)},
            {"ff_mult", u(a.ff_mult)},
            {"norm_eps", num(a.norm_eps)},
        }));
    }
    if (c.verifier) {
        const VerifierConfig & v = *c.verifier;
        comps.emplace_back("verifier", object({
            {"in_channels", u(v.in_channels)},
            {"labels", array(v.labels, s)},
            {"block_out_channels", array(v.body.block_out_channels, u)},
            {"num_blocks", array(v.body.num_blocks, u)},
            {"act_fn", str("relu")},
        }));
    }
    std::vector<std::pair<std::string, std::string>> top = {
        {"format_version", u(c.format_version)},
        {"model_id", str(c.model_id)},
        {"name", c.name.empty() ? "null" : str(c.name)},
        {"license", c.license.empty() ? "null" : str(c.license)},
        {"components", object(comps)},
    };
    if (c.sampling) {
        const SamplingConfig & g = *c.sampling;
        std::vector<std::pair<std::string, std::string>> fields = {
            {"prediction", str(g.prediction)},
            {"num_train_timesteps", u(g.num_train_timesteps)},
            {"beta_schedule", str(g.beta_schedule)},
            {"beta_start", num_exact(g.beta_start)},
            {"beta_end", num_exact(g.beta_end)},
            {"timestep_spacing", str(g.timestep_spacing)},
            {"steps_offset", u(g.steps_offset)},
            {"flow_shift", num_exact(g.flow_shift)},
            {"default_sampler", str(g.default_sampler)},
            {"default_steps", u(g.default_steps)},
            {"default_cfg", num_exact(g.default_cfg, /*single=*/true)},
        };
        if (g.guidance_max_sigma) {  // optional: only where the bundle has it, as it is written
            fields.emplace_back("guidance_max_sigma", num_exact(*g.guidance_max_sigma, /*single=*/true));
        }
        if (g.candidates) {
            fields.emplace_back("candidates", u(*g.candidates));
            fields.emplace_back("verify_sigma", num_exact(g.verify_sigma, /*single=*/true));
        }
        top.emplace_back("sampling", object(fields));
    }
    if (c.text_encoder) {
        top.emplace_back("text_encoder", object({
            {"sha256", str(c.text_encoder->sha256)},
            {"layers", u(c.text_encoder->layers)},
        }));
    }
    return object(top);
}

}  // namespace cutecpp
