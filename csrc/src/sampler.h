// Noise schedules and one-step sampler updates, computed as diffusers 0.42.1
// computes them (same formulas, same float32/float64 split, same order of
// operations), from the bundle's training schedule (cutecpp.sampling.*):
//
//   euler_a          EulerAncestralDiscreteScheduler
//   euler            EulerDiscreteScheduler
//   dpmpp_2m_karras  DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
//                    use_karras_sigmas=True, final_sigmas_type="zero")
//   lcm              LCMScheduler (original_inference_steps 50, timestep_scaling 10)
//   flow_euler       FlowMatchEulerDiscreteScheduler(shift=flow_shift)
//
// Compiled with -ffp-contract=off; transcendental functions are rng.h's
// portable ones, so a schedule is the same bits on every machine. diffusers
// itself runs torch's float32 sqrt/log/exp, which are not correctly rounded,
// so results agree with it to float32 rounding (about 1e-7 relative), not to
// the bit.
#pragma once

#include "config.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cutecpp {

enum class Sampler : int32_t { euler_a = 0, euler = 1, dpmpp_2m_karras = 2, lcm = 3, flow_euler = 4 };
constexpr int32_t kSamplerCount = 5;
constexpr int32_t kMaxSteps = 1000;

const char * sampler_name(int32_t id);           // nullptr if unknown
int32_t sampler_id(const std::string & name);    // -1 if unknown
std::string sampler_list();                       // "euler_a, euler, ..." for messages
// Whether a sampler can drive a model trained with `prediction` (flow_euler needs
// "flow", the others "epsilon" or "v_prediction"); why not, otherwise.
bool sampler_fits(const SamplingConfig & c, Sampler s, std::string * why);

// A sampler's plan for `steps` steps.
struct Schedule {
    Sampler sampler = Sampler::euler;
    int steps = 0;
    std::vector<float> sigmas;          // steps + 1, last 0 (lcm: sqrt((1 - a) / a) at each timestep)
    std::vector<float> timesteps;       // steps: the UNet's timestep input
    std::vector<float> input_divisors;  // steps: the UNet sees sample / divisor (1 where the sampler does not scale)
    float init_noise_sigma = 1.0f;      // the initial latent is unit noise * init_noise_sigma

    // Internal per-sampler data.
    bool v_prediction = false;
    std::vector<float> alphas_cumprod;  // training schedule (lcm)
    std::vector<int> int_timesteps;     // lcm

    bool scales_input() const { return sampler == Sampler::euler || sampler == Sampler::euler_a; }
    // Whether step i adds fresh noise (euler_a: every step; lcm: all but the last).
    bool needs_noise(int i) const;
    // Whether step i reads / writes the caller's history buffer (dpmpp_2m_karras).
    bool uses_state() const { return sampler == Sampler::dpmpp_2m_karras; }
};

// Fails (CUTECPP_ERR_INVALID_ARGUMENT) for steps outside 1..1000, a sampler that does not fit
// the model's prediction type, or lcm beyond its 50 original steps.
Schedule make_schedule(const SamplingConfig & c, Sampler s, int steps);

// One update at step i: from `sample` and the (guided) model output, the next sample, for n
// elements; out may be sample. noise: n standard normals when needs_noise(i), else unused
// (may be NULL). state: n floats the caller keeps across the steps of one run (dpmpp_2m_karras:
// the previous denoised estimate; written at every step, read from step 1 on).
void sampler_step(const Schedule & s, int i, const float * model_output, const float * sample, const float * noise,
                  float * state, float * out, size_t n);

}  // namespace cutecpp
