// What the SD VAE's decoder and encoder (diffusers AutoencoderKL; vae_decoder.cpp,
// vae_encoder.cpp) share: the norms' eps, the tensors of their layers and the graph
// of the layers both have (each adds its up- or downsampler).
#pragma once

#include "blocks.h"
#include "config.h"

#include "ggml.h"

#include <cstdint>
#include <string>
#include <vector>

namespace cutecpp {

constexpr float kVaeEps = 1e-6f;  // diffusers fixes resnet_eps and the norms' eps for the VAE

// Each visited layer's parameters under prefix + its checkpoint name.
struct VaeInventory {
    const std::string & prefix;
    TensorShapes & out;
    const char * shortcut;  // the resnets' 1x1 shortcut conv (the vae_encoder abbreviates it)

    void affine(const std::string & p, int64_t ch) {
        out[prefix + p + ".weight"] = {ch};
        out[prefix + p + ".bias"] = {ch};
    }
    void conv(const std::string & p, int64_t in, int64_t o, int64_t k) {
        out[prefix + p + ".weight"] = {o, in, k, k};
        out[prefix + p + ".bias"] = {o};
    }
    void linear(const std::string & p, int64_t in, int64_t o) {
        out[prefix + p + ".weight"] = {o, in};
        out[prefix + p + ".bias"] = {o};
    }
    // ResnetBlock2D without time embedding; the 1x1 shortcut when the channels change.
    void resnet(const std::string & p, int64_t in, int64_t o) {
        affine(p + ".norm1", in);
        conv(p + ".conv1", in, o, 3);
        affine(p + ".norm2", o);
        conv(p + ".conv2", o, o, 3);
        if (in != o) conv(p + "." + shortcut, in, o, 1);
    }
    // Attention with group_norm, biased q/k/v and to_out.0.
    void attention(const std::string & p, int64_t ch) {
        affine(p + ".group_norm", ch);
        for (const char * l : {".to_q", ".to_k", ".to_v", ".to_out.0"}) linear(p + l, ch, ch);
    }
    // The up- and downsamplers' 3x3 conv.
    void upsample(const std::string & p, int64_t ch) { conv(p + ".conv", ch, ch, 3); }
    void downsample(const std::string & p, int64_t ch) { conv(p + ".conv", ch, ch, 3); }
    void norm_act(const std::string & p, int64_t ch) { affine(p, ch); }
    void end(const std::string &) {}
};

// Builds the walked layers on x; names are "<component>." + the checkpoint prefix.
struct VaeGraph {
    ggml_context * ctx;
    Blocks nn;
    const char * component;  // "vae_decoder." / "vae_encoder."
    const char * shortcut;   // as VaeInventory's
    int groups;
    ggml_tensor * x;
    std::vector<ggml_tensor *> & blocks;

    std::string at(const std::string & p) const { return component + p; }
    void conv(const std::string & p, int64_t, int64_t, int64_t k) { x = nn.conv2d(x, at(p), 1, static_cast<int>(k / 2)); }
    void resnet(const std::string & p, int64_t, int64_t) { x = nn.resnet_plain(x, at(p), groups, kVaeEps, shortcut); }
    void attention(const std::string & p, int64_t) { x = nn.vae_attention(x, at(p), groups, kVaeEps); }
    void norm_act(const std::string & p, int64_t) { x = nn.group_norm(x, at(p), groups, kVaeEps, true); }
    void end(const std::string & p) {
        ggml_set_name(x, at(p).c_str());
        blocks.push_back(x);
    }
};

}  // namespace cutecpp
