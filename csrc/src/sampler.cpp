// Schedules and updates of the five samplers (see sampler.h). Each function
// names the diffusers 0.42.1 code it follows; comments mark where diffusers
// computes in float64 (numpy) and where in float32 (torch). Compiled with
// -ffp-contract=off: a * b + c below is two roundings, as in torch's separate
// ops, except where an explicit std::fma reproduces one of torch's kernels.
#include "sampler.h"

#include "error.h"
#include "rng.h"

#include <algorithm>
#include <cmath>

namespace cutecpp {

namespace {

constexpr const char * kSamplerNames[kSamplerCount] = {"euler_a", "euler", "dpmpp_2m_karras", "lcm", "flow_euler"};
constexpr int kLcmOriginalSteps = 50;     // LCMScheduler's original_inference_steps
constexpr float kLcmTimestepScaling = 10.0f;

// torch.linspace(a, b, n, dtype=float32) on CPU (RangeFactoriesKernel.cpp): the step in
// float, then start + step * i for the first half and end - step * (n - 1 - i) for the
// second. torch's AVX2/AVX512/NEON kernels are compiled with FMA contraction, so each is
// one fused multiply-add (its scalar "default" kernel rounds twice; ulp-level difference).
std::vector<float> torch_linspace_f32(double a, double b, int n) {
    const float start = static_cast<float>(a);
    const float end = static_cast<float>(b);
    std::vector<float> out(static_cast<size_t>(n));
    if (n == 1) {
        out[0] = start;
        return out;
    }
    const float step = (end - start) / static_cast<float>(n - 1);
    const int halfway = n / 2;
    for (int i = 0; i < n; ++i) {
        out[i] = i < halfway ? std::fma(step, static_cast<float>(i), start)
                             : std::fma(-step, static_cast<float>(n - 1 - i), end);
    }
    return out;
}

// np.linspace(start, stop, num, endpoint) in float64: i * step + start, the last set to stop.
std::vector<double> np_linspace(double start, double stop, int num, bool endpoint = true) {
    std::vector<double> y(static_cast<size_t>(num));
    const int div = endpoint ? num - 1 : num;
    const double delta = stop - start;
    if (div > 0) {
        const double step = delta / div;
        for (int i = 0; i < num; ++i) y[i] = (step == 0.0 ? (static_cast<double>(i) / div) * delta : i * step) + start;
    } else {
        for (int i = 0; i < num; ++i) y[i] = static_cast<double>(i) * delta + start;
    }
    if (endpoint && num > 1) y[num - 1] = stop;
    return y;
}

// np.interp(x, arange(len(fp)), fp) in float64, clamped to fp's ends outside.
double np_interp(double x, const std::vector<double> & fp) {
    const int n = static_cast<int>(fp.size());
    if (x < 0.0) return fp[0];
    if (x > n - 1) return fp[n - 1];
    const int j = static_cast<int>(std::floor(x));
    if (j >= n - 1) return fp[n - 1];
    if (static_cast<double>(j) == x) return fp[j];
    const double slope = (fp[j + 1] - fp[j]) / 1.0;
    return slope * (x - j) + fp[j];
}

double np_round(double x) { return std::nearbyint(x); }  // half to even, as numpy

// The training schedule of the discrete (non-flow) samplers, as their __init__ computes it
// in torch float32: betas, alphas_cumprod (torch.cumprod accumulates in double on CPU and
// rounds each output to float) and sigmas = ((1 - a) / a) ** 0.5.
struct Training {
    std::vector<float> alphas_cumprod;
    std::vector<float> sigmas;  // ascending with the timestep
};

Training training(const SamplingConfig & c) {
    const int n = static_cast<int>(c.num_train_timesteps);
    std::vector<float> betas;
    if (c.beta_schedule == "linear") {
        betas = torch_linspace_f32(c.beta_start, c.beta_end, n);
    } else {  // scaled_linear: linspace(start ** 0.5, end ** 0.5) ** 2
        betas = torch_linspace_f32(std::sqrt(c.beta_start), std::sqrt(c.beta_end), n);
        for (float & b : betas) b = b * b;
    }
    Training t;
    t.alphas_cumprod.resize(n);
    t.sigmas.resize(n);
    double product = 1.0;
    for (int i = 0; i < n; ++i) {
        product *= static_cast<double>(1.0f - betas[i]);
        const float a = static_cast<float>(product);
        t.alphas_cumprod[i] = a;
        t.sigmas[i] = std::sqrt((1.0f - a) / a);
    }
    return t;
}

std::vector<double> widen(const std::vector<float> & v) { return std::vector<double>(v.begin(), v.end()); }

// EulerDiscreteScheduler / EulerAncestralDiscreteScheduler.set_timesteps (identical for both
// without karras sigmas): float32 timesteps by the spacing, sigmas by np.interp in float64.
void euler_schedule(const SamplingConfig & c, Schedule & s) {
    const int n_train = static_cast<int>(c.num_train_timesteps);
    const int steps = s.steps;
    std::vector<float> ts(static_cast<size_t>(steps));
    if (c.timestep_spacing == "linspace") {
        const std::vector<double> y = np_linspace(0.0, n_train - 1.0, steps);
        for (int i = 0; i < steps; ++i) ts[i] = static_cast<float>(y[steps - 1 - i]);
    } else if (c.timestep_spacing == "leading") {
        const int ratio = n_train / steps;
        for (int i = 0; i < steps; ++i) {
            ts[i] = static_cast<float>((steps - 1 - i) * ratio) + static_cast<float>(c.steps_offset);
        }
    } else {  // trailing: np.arange(n_train, 0, -ratio).round() - 1, filled as numpy fills it
        const double ratio = static_cast<double>(n_train) / steps;
        const double start = n_train;
        const double second = start + -ratio;
        const double delta = second - start;
        // numpy's arange can yield one element more than `steps` (a float rounding of the
        // length), which diffusers then runs as an extra step at timestep -1; cutecpp keeps
        // the `steps` real ones.
        for (int i = 0; i < steps; ++i) {
            const double v = i == 0 ? start : i == 1 ? second : start + i * delta;
            ts[i] = static_cast<float>(np_round(v)) - 1.0f;
        }
    }
    const std::vector<double> train_sigmas = widen(training(c).sigmas);
    s.timesteps = ts;
    s.sigmas.resize(steps + 1);
    for (int i = 0; i < steps; ++i) s.sigmas[i] = static_cast<float>(np_interp(ts[i], train_sigmas));
    s.sigmas[steps] = 0.0f;

    // init_noise_sigma: max(sigmas), or (max ** 2 + 1) ** 0.5 for "leading" (torch float32).
    const float max_sigma = *std::max_element(s.sigmas.begin(), s.sigmas.end());
    s.init_noise_sigma = c.timestep_spacing == "leading" ? std::sqrt(max_sigma * max_sigma + 1.0f) : max_sigma;
    s.input_divisors.resize(steps);
    for (int i = 0; i < steps; ++i) s.input_divisors[i] = std::sqrt(s.sigmas[i] * s.sigmas[i] + 1.0f);
}

// DPMSolverMultistepScheduler._sigma_to_t: float64 sigma against float32 log sigmas.
double sigma_to_t(double sigma, const std::vector<float> & log_sigmas) {
    const double log_sigma = portable::log(std::max(sigma, 1e-10));
    const int n = static_cast<int>(log_sigmas.size());
    // low_idx = cumsum(dists >= 0).argmax(): the first index where the count reaches its maximum.
    int count = 0, best = -1, low_idx = 0;
    for (int i = 0; i < n; ++i) {
        count += (log_sigma - static_cast<double>(log_sigmas[i])) >= 0.0;
        if (count > best) {
            best = count;
            low_idx = i;
        }
    }
    low_idx = std::min(low_idx, n - 2);
    const int high_idx = low_idx + 1;
    const float low = log_sigmas[low_idx];
    const float high = log_sigmas[high_idx];
    double w = (static_cast<double>(low) - log_sigma) / static_cast<double>(low - high);  // low - high in float32
    w = std::min(std::max(w, 0.0), 1.0);
    return (1.0 - w) * low_idx + w * high_idx;
}

// DPMSolverMultistepScheduler.set_timesteps with use_karras_sigmas (float64, numpy):
// Karras et al.'s rho = 7 ramp between the training schedule's smallest and largest sigma,
// timesteps by _sigma_to_t, rounded.
void dpm_karras_schedule(const SamplingConfig & c, Schedule & s) {
    const int steps = s.steps;
    const Training t = training(c);
    std::vector<float> log_sigmas(t.sigmas.size());
    for (size_t i = 0; i < t.sigmas.size(); ++i) log_sigmas[i] = portable::logf(t.sigmas[i]);  // np.log on float32
    const double sigma_min = t.sigmas.front();
    const double sigma_max = t.sigmas.back();
    const double rho = 7.0;
    const std::vector<double> ramp = np_linspace(0.0, 1.0, steps);
    const double min_inv_rho = portable::pow(sigma_min, 1.0 / rho);
    const double max_inv_rho = portable::pow(sigma_max, 1.0 / rho);
    s.sigmas.resize(steps + 1);
    s.timesteps.resize(steps);
    for (int i = 0; i < steps; ++i) {
        const double sigma = portable::pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
        s.timesteps[i] = static_cast<float>(np_round(sigma_to_t(sigma, log_sigmas)));
        s.sigmas[i] = static_cast<float>(sigma);
    }
    s.sigmas[steps] = 0.0f;  // final_sigmas_type "zero"
    s.input_divisors.assign(steps, 1.0f);
    s.init_noise_sigma = 1.0f;
}

// LCMScheduler.set_timesteps: every k-th training step of the 50-step distillation schedule,
// `steps` of them evenly by index.
void lcm_schedule(const SamplingConfig & c, Schedule & s) {
    const int n_train = static_cast<int>(c.num_train_timesteps);
    const int steps = s.steps;
    if (n_train < kLcmOriginalSteps) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "lcm needs num_train_timesteps >= 50, the model has " + std::to_string(n_train));
    }
    if (steps > kLcmOriginalSteps) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "lcm takes at most 50 steps (its original_inference_steps), got " +
                                               std::to_string(steps));
    }
    const int k = n_train / kLcmOriginalSteps;
    const std::vector<double> idx = np_linspace(0.0, kLcmOriginalSteps, steps, /*endpoint=*/false);
    Training t = training(c);
    s.int_timesteps.resize(steps);
    s.timesteps.resize(steps);
    s.sigmas.resize(steps + 1);
    for (int i = 0; i < steps; ++i) {
        const int j = static_cast<int>(std::floor(idx[i]));  // index into the reversed origin schedule
        const int ts = (kLcmOriginalSteps - j) * k - 1;
        s.int_timesteps[i] = ts;
        s.timesteps[i] = static_cast<float>(ts);
        s.sigmas[i] = t.sigmas[ts];
    }
    s.sigmas[steps] = 0.0f;
    s.alphas_cumprod = std::move(t.alphas_cumprod);
    s.input_divisors.assign(steps, 1.0f);
    s.init_noise_sigma = 1.0f;
}

// FlowMatchEulerDiscreteScheduler: __init__ shifts the training sigmas in torch float32, then
// set_timesteps spaces `steps` timesteps between the shifted ends in float64 and shifts
// them again (as diffusers does), rounding the sigmas to float32.
void flow_schedule(const SamplingConfig & c, Schedule & s) {
    const int n_train = static_cast<int>(c.num_train_timesteps);
    const int steps = s.steps;
    const double shift = c.flow_shift;
    const float shift_f = static_cast<float>(shift);
    const float shift_m1_f = static_cast<float>(shift - 1.0);
    const auto train_sigma = [&](int i) {  // timesteps N..1 over N, shifted (float32)
        const float sigma = static_cast<float>(n_train - i) / static_cast<float>(n_train);
        return shift_f * sigma / (1.0f + shift_m1_f * sigma);
    };
    const double sigma_max = train_sigma(0);
    const double sigma_min = train_sigma(n_train - 1);
    const std::vector<double> ts = np_linspace(sigma_max * n_train, sigma_min * n_train, steps);
    s.sigmas.resize(steps + 1);
    s.timesteps.resize(steps);
    for (int i = 0; i < steps; ++i) {
        const double sigma = ts[i] / n_train;
        const float shifted = static_cast<float>(shift * sigma / (1.0 + (shift - 1.0) * sigma));
        s.sigmas[i] = shifted;
        s.timesteps[i] = shifted * static_cast<float>(n_train);
    }
    s.sigmas[steps] = 0.0f;
    s.input_divisors.assign(steps, 1.0f);
    s.init_noise_sigma = 1.0f;
}

// DPMSolverMultistepScheduler._sigma_to_alpha_sigma_t (torch float32): 1 / x is torch's
// reciprocal, one rounding.
void alpha_sigma(float sigma, float & alpha_t, float & sigma_t) {
    alpha_t = 1.0f / std::sqrt(sigma * sigma + 1.0f);
    sigma_t = sigma * alpha_t;
}

float dpm_lambda(float sigma) {
    float a, s;
    alpha_sigma(sigma, a, s);
    return portable::logf(a) - portable::logf(s);
}

}  // namespace

const char * sampler_name(int32_t id) { return id >= 0 && id < kSamplerCount ? kSamplerNames[id] : nullptr; }

int32_t sampler_id(const std::string & name) {
    for (int32_t i = 0; i < kSamplerCount; ++i) {
        if (name == kSamplerNames[i]) return i;
    }
    return -1;
}

std::string sampler_list() {
    std::string out;
    for (const char * n : kSamplerNames) out += (out.empty() ? "" : ", ") + std::string(n);
    return out;
}

bool sampler_fits(const SamplingConfig & c, Sampler s, std::string * why) {
    const bool flow_model = c.prediction == "flow";
    const bool flow_sampler = s == Sampler::flow_euler;
    if (flow_model == flow_sampler) return true;
    if (why) {
        *why = flow_sampler ? "flow_euler needs a flow-prediction model, this one predicts " + c.prediction
                            : std::string(sampler_name(static_cast<int32_t>(s))) +
                                  " needs an epsilon or v_prediction model, this one is a flow model (use flow_euler)";
    }
    return false;
}

bool Schedule::needs_noise(int i) const {
    if (sampler == Sampler::euler_a) return true;
    if (sampler == Sampler::lcm) return i != steps - 1;
    return false;
}

Schedule make_schedule(const SamplingConfig & c, Sampler sampler, int steps) {
    if (steps < 1 || steps > kMaxSteps) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "steps must be 1 to " + std::to_string(kMaxSteps) + ", got " +
                                               std::to_string(steps));
    }
    if (static_cast<int32_t>(sampler) < 0 || static_cast<int32_t>(sampler) >= kSamplerCount) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "unknown sampler " + std::to_string(static_cast<int32_t>(sampler)) +
                                               " (0 to " + std::to_string(kSamplerCount - 1) + ": " + sampler_list() + ")");
    }
    std::string why;
    if (!sampler_fits(c, sampler, &why)) fail(CUTECPP_ERR_INVALID_ARGUMENT, why);
    if (sampler != Sampler::flow_euler && steps > static_cast<int>(c.num_train_timesteps)) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "steps " + std::to_string(steps) + " exceed the model's " +
                                               std::to_string(c.num_train_timesteps) + " training timesteps");
    }
    Schedule s;
    s.sampler = sampler;
    s.steps = steps;
    s.v_prediction = c.prediction == "v_prediction";
    switch (sampler) {
        case Sampler::euler_a:
        case Sampler::euler: euler_schedule(c, s); break;
        case Sampler::dpmpp_2m_karras: dpm_karras_schedule(c, s); break;
        case Sampler::lcm: lcm_schedule(c, s); break;
        case Sampler::flow_euler: flow_schedule(c, s); break;
    }
    return s;
}

void sampler_step(const Schedule & s, int i, const float * mo, const float * sample, const float * noise, float * state,
                  float * out, size_t n) {
    if (i < 0 || i >= s.steps) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, "step " + std::to_string(i) + " is outside 0.." + std::to_string(s.steps - 1));
    }
    if (s.needs_noise(i) && noise == nullptr) {
        fail(CUTECPP_ERR_INVALID_ARGUMENT, std::string(sampler_name(static_cast<int32_t>(s.sampler))) + " needs noise at step " +
                                               std::to_string(i));
    }
    if (s.uses_state() && state == nullptr) fail(CUTECPP_ERR_INVALID_ARGUMENT, "dpmpp_2m_karras needs its state buffer");
    const float sigma = s.sigmas[i];
    const float sigma_next = s.sigmas[i + 1];
    switch (s.sampler) {
        case Sampler::euler: {  // EulerDiscreteScheduler.step, s_churn = 0
            const float sigma_hat = sigma * 1.0f;
            const float dt = sigma_next - sigma_hat;
            const float v_out = -sigma / std::sqrt(sigma * sigma + 1.0f);
            const float v_skip = sigma * sigma + 1.0f;
            for (size_t k = 0; k < n; ++k) {
                const float x = sample[k];
                const float pred = s.v_prediction ? mo[k] * v_out + x / v_skip : x - sigma_hat * mo[k];
                const float derivative = (x - pred) / sigma_hat;
                out[k] = x + derivative * dt;
            }
            break;
        }
        case Sampler::euler_a: {  // EulerAncestralDiscreteScheduler.step
            const float from2 = sigma * sigma;
            const float to2 = sigma_next * sigma_next;
            const float sigma_up = std::sqrt(to2 * (from2 - to2) / from2);
            const float sigma_down = std::sqrt(to2 - sigma_up * sigma_up);
            const float dt = sigma_down - sigma;
            const float v_out = -sigma / std::sqrt(sigma * sigma + 1.0f);
            const float v_skip = sigma * sigma + 1.0f;
            for (size_t k = 0; k < n; ++k) {
                const float x = sample[k];
                const float pred = s.v_prediction ? mo[k] * v_out + x / v_skip : x - sigma * mo[k];
                const float derivative = (x - pred) / sigma;
                const float prev = x + derivative * dt;
                out[k] = prev + noise[k] * sigma_up;
            }
            break;
        }
        case Sampler::dpmpp_2m_karras: {  // DPMSolverMultistepScheduler.step, dpmsolver++, order 2, midpoint
            float alpha_s0, sigma_s0;
            alpha_sigma(sigma, alpha_s0, sigma_s0);
            float alpha_t, sigma_t;
            alpha_sigma(sigma_next, alpha_t, sigma_t);
            const float lambda_t = dpm_lambda(sigma_next);
            const float lambda_s0 = dpm_lambda(sigma);
            const float h = lambda_t - lambda_s0;
            const float ratio = sigma_t / sigma_s0;
            const float coeff = alpha_t * (portable::expf(-h) - 1.0f);
            // First order on the first step (no history) and on the last (lower_order_final,
            // always on with final_sigmas_type "zero").
            const bool first_order = i == 0 || i == s.steps - 1;
            float inv_r0 = 0.0f;
            if (!first_order) {
                const float lambda_s1 = dpm_lambda(s.sigmas[i - 1]);
                const float r0 = (lambda_s0 - lambda_s1) / h;
                inv_r0 = 1.0f / r0;
            }
            const float half_coeff = 0.5f * coeff;
            for (size_t k = 0; k < n; ++k) {
                const float x = sample[k];
                // convert_model_output: the denoised estimate x0.
                const float x0 = s.v_prediction ? alpha_s0 * x - sigma_s0 * mo[k] : (x - sigma_s0 * mo[k]) / alpha_s0;
                float next;
                if (first_order) {
                    next = ratio * x - coeff * x0;
                } else {
                    const float d1 = inv_r0 * (x0 - state[k]);
                    next = ratio * x - coeff * x0 - half_coeff * d1;
                }
                state[k] = x0;
                out[k] = next;
            }
            break;
        }
        case Sampler::lcm: {  // LCMScheduler.step
            const int t = s.int_timesteps[i];
            const int prev_t = i + 1 < s.steps ? s.int_timesteps[i + 1] : t;
            const float alpha_prod_t = s.alphas_cumprod[t];
            const float alpha_prod_prev = s.alphas_cumprod[prev_t];
            const float sqrt_a = std::sqrt(alpha_prod_t);
            const float sqrt_b = std::sqrt(1.0f - alpha_prod_t);
            const float sqrt_a_prev = std::sqrt(alpha_prod_prev);
            const float sqrt_b_prev = std::sqrt(1.0f - alpha_prod_prev);
            // get_scalings_for_boundary_condition_discrete, sigma_data 0.5 (0.25 / x is torch's reciprocal * 0.25).
            const float scaled = static_cast<float>(t) * kLcmTimestepScaling;
            const float c_skip = (1.0f / (scaled * scaled + 0.25f)) * 0.25f;
            const float c_out = scaled / std::sqrt(scaled * scaled + 0.25f);
            const bool last = i == s.steps - 1;
            for (size_t k = 0; k < n; ++k) {
                const float x = sample[k];
                const float x0 = s.v_prediction ? sqrt_a * x - sqrt_b * mo[k] : (x - sqrt_b * mo[k]) / sqrt_a;
                const float denoised = c_out * x0 + c_skip * x;
                out[k] = last ? denoised : sqrt_a_prev * denoised + sqrt_b_prev * noise[k];
            }
            break;
        }
        case Sampler::flow_euler: {  // FlowMatchEulerDiscreteScheduler.step
            const float dt = sigma_next - sigma;
            for (size_t k = 0; k < n; ++k) out[k] = sample[k] + dt * mo[k];
            break;
        }
    }
}

}  // namespace cutecpp
