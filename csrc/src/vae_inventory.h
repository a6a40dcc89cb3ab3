// What the SD VAE's decoder and encoder (diffusers AutoencoderKL; vae_decoder.cpp,
// vae_encoder.cpp) share: the norms' eps and the tensors of their layers.
#pragma once

#include "config.h"

#include <cstdint>
#include <string>

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

}  // namespace cutecpp
