// cutecpp-run: runs the public C API's computations listed in a job file and writes each result
// as raw float32, so that two builds (x86-64 here, aarch64 under qemu) can be compared bit by bit
// or within a tolerance (tests/test_aarch64.py). One line per job; every path is a file of raw
// float32 in C order, COUNT the number of floats the result has:
//
//   bundle PATH                      load a bundle (the jobs after it use it)
//   rng OUT COUNT SEED STREAM OFFSET  cutecpp_rng_normal (needs no bundle)
//   threads N                        threads of the contexts made after it (default 2)
//   align OUT COUNT STATES n T
//   unet OUT COUNT SAMPLE n h w TIMESTEPS CONTEXT T
//   tiny_decode OUT COUNT LATENTS n h w       (likewise vae_decode, tiny_encode, vae_encode)
//   sample OUT COUNT COND Tc UNCOND|- Tu SAMPLER STEPS CFG SEED H W
//                                    SAMPLER, STEPS: -1 for the bundle's default; CFG: nan for it
//   draw OUT COUNT LATENTS_OUT LATENT_COUNT COND Tc UNCOND|- Tu SAMPLER STEPS CFG SEED H W
//                                    sample, write the latents, and the picture of the tiny decoder
//
// Prints "ok JOB OUT MS" or "error JOB STATUS: MESSAGE" per job; exits 1 when any job failed, 2 on
// a malformed job file. An input must hold a whole multiple of the elements its n, h, w (or n, T)
// name; its width (channels, features) is taken to be the bundle's, unchecked: this is a developer
// tool fed by the tests, not a place for untrusted files.
#include "cutecpp.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Floats past COUNT that must stay untouched: a COUNT smaller than the result is reported, not
// written past.
constexpr size_t kGuard = 4096;

bool read_floats(const std::string & path, std::vector<float> & out) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) return false;
    const std::streamsize bytes = f.tellg();
    if (bytes < 0 || bytes % 4 != 0) return false;
    out.resize(static_cast<size_t>(bytes / 4));
    f.seekg(0);
    return static_cast<bool>(f.read(reinterpret_cast<char *>(out.data()), bytes));
}

bool write_floats(const std::string & path, const std::vector<float> & data) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char *>(data.data()), static_cast<std::streamsize>(data.size() * 4));
    return static_cast<bool>(f);
}

struct Session {
    cutecpp_model * model = nullptr;
    cutecpp_context * ctx = nullptr;
    int threads = 2;

    void close() {
        cutecpp_context_free(ctx);
        cutecpp_model_free(model);
        ctx = nullptr;
        model = nullptr;
    }
};

// Reads an input that must hold a whole, non-zero multiple of `units` floats.
bool load_input(const std::string & path, size_t units, std::vector<float> & data, std::string & why) {
    if (!read_floats(path, data)) {
        why = "cannot read " + path;
        return false;
    }
    if (data.empty() || data.size() % units != 0) {
        why = path + " holds " + std::to_string(data.size()) + " floats, not a multiple of " + std::to_string(units);
        return false;
    }
    return true;
}

int sampler_index(const std::string & name) {
    if (name == "-1") return -1;
    for (int i = 0; cutecpp_sampler_name(i) != nullptr; ++i) {
        if (name == cutecpp_sampler_name(i)) return i;
    }
    return -2;
}

// Runs one job line (its arguments after OUT COUNT) into `out` (count floats, then the guard);
// returns the status (CUTECPP_OK on success) and fills `why` on a usage error.
cutecpp_status run_job(Session & s, const std::string & op, std::istringstream & args, size_t count,
                       std::vector<float> & out, std::string & why) {
    if (op == "rng") {
        unsigned long long seed = 0, stream = 0, offset = 0;
        if (!(args >> seed >> stream >> offset)) {
            why = "expected SEED STREAM OFFSET";
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        return cutecpp_rng_normal(seed, stream, offset, static_cast<int64_t>(count), out.data());
    }
    if (s.ctx == nullptr) {
        why = "no bundle loaded";
        return CUTECPP_ERR_INVALID_ARGUMENT;
    }
    std::vector<float> a, b, c;
    if (op == "align") {
        std::string in;
        int n = 0, t = 0;
        if (!(args >> in >> n >> t) || n < 1 || t < 1) {
            why = "expected STATES n T";
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        if (!load_input(in, static_cast<size_t>(n) * t, a, why)) return CUTECPP_ERR_INVALID_ARGUMENT;
        return cutecpp_align(s.ctx, a.data(), n, t, out.data());
    }
    if (op == "unet") {
        std::string sample, timesteps, context;
        int n = 0, h = 0, w = 0, t = 0;
        if (!(args >> sample >> n >> h >> w >> timesteps >> context >> t) || n < 1 || h < 1 || w < 1 || t < 1) {
            why = "expected SAMPLE n h w TIMESTEPS CONTEXT T";
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        if (!load_input(sample, static_cast<size_t>(n) * h * w, a, why) || !load_input(timesteps, n, b, why) ||
            !load_input(context, static_cast<size_t>(n) * t, c, why)) {
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        if (b.size() != static_cast<size_t>(n)) {
            why = "TIMESTEPS must hold n floats";
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        return cutecpp_unet_eval(s.ctx, a.data(), n, h, w, b.data(), c.data(), t, out.data());
    }
    if (op == "tiny_decode" || op == "vae_decode" || op == "tiny_encode" || op == "vae_encode") {
        std::string in;
        int n = 0, h = 0, w = 0;
        if (!(args >> in >> n >> h >> w) || n < 1 || h < 1 || w < 1) {
            why = "expected IN n h w";
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        if (!load_input(in, static_cast<size_t>(n) * h * w, a, why)) return CUTECPP_ERR_INVALID_ARGUMENT;
        if (op == "tiny_decode") return cutecpp_tiny_decode(s.ctx, a.data(), n, h, w, out.data());
        if (op == "vae_decode") return cutecpp_vae_decode(s.ctx, a.data(), n, h, w, out.data());
        if (op == "tiny_encode") return cutecpp_tiny_encode(s.ctx, a.data(), n, h, w, out.data());
        return cutecpp_vae_encode(s.ctx, a.data(), n, h, w, out.data());
    }
    if (op == "sample" || op == "draw") {
        std::string latents_path, cond, uncond, sampler, cfg;
        size_t latent_count = count;
        if (op == "draw" && (!(args >> latents_path >> latent_count) || latent_count == 0)) {
            why = "expected LATENTS_OUT LATENT_COUNT";
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        int tc = 0, tu = 0, steps = 0, h = 0, w = 0;
        unsigned long long seed = 0;
        if (!(args >> cond >> tc >> uncond >> tu >> sampler >> steps >> cfg >> seed >> h >> w) || tc < 1) {
            why = "expected COND Tc UNCOND|- Tu SAMPLER STEPS CFG SEED H W";
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        cutecpp_sample_params p = cutecpp_sample_default_params();
        p.sampler = sampler_index(sampler);
        if (p.sampler == -2) {
            why = "unknown sampler " + sampler;
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        p.steps = steps;
        p.cfg_scale = cfg == "nan" ? NAN : std::strtof(cfg.c_str(), nullptr);
        p.seed = seed;
        p.latent_height = h;
        p.latent_width = w;
        if (!load_input(cond, tc, a, why)) return CUTECPP_ERR_INVALID_ARGUMENT;
        const bool has_uncond = uncond != "-";
        if (has_uncond && (tu < 1 || !load_input(uncond, tu, b, why))) {
            if (why.empty()) why = "Tu must be at least 1";
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        std::vector<float> & latents = op == "draw" ? c : out;
        if (op == "draw") latents.assign(latent_count + kGuard, NAN);
        const cutecpp_status st = cutecpp_sample(s.ctx, a.data(), tc, has_uncond ? b.data() : nullptr,
                                                 has_uncond ? tu : 0, p, latents.data());
        if (st != CUTECPP_OK || op == "sample") return st;
        // draw: the latents, then the bundle's tiny decoder on them (h, w given, as the decode needs them)
        if (!std::isnan(latents[latent_count]) || h < 1 || w < 1) {
            why = h < 1 || w < 1 ? "draw needs H and W" : "the latents are larger than LATENT_COUNT";
            return CUTECPP_ERR_INVALID_ARGUMENT;
        }
        latents.resize(latent_count);
        if (!write_floats(latents_path, latents)) {
            why = "cannot write " + latents_path;
            return CUTECPP_ERR_IO;
        }
        return cutecpp_tiny_decode(s.ctx, latents.data(), 1, h, w, out.data());
    }
    why = "unknown job " + op;
    return CUTECPP_ERR_INVALID_ARGUMENT;
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s JOBFILE\n", argv[0]);
        return 2;
    }
    std::ifstream jobs(argv[1]);
    if (!jobs) {
        std::fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    Session s;
    bool failed = false;
    std::string line;
    while (std::getline(jobs, line)) {
        std::istringstream args(line);
        std::string op;
        if (!(args >> op) || op[0] == '#') continue;
        if (op == "threads") {
            if (!(args >> s.threads)) {
                std::fprintf(stderr, "threads needs a number\n");
                return 2;
            }
            continue;
        }
        if (op == "bundle") {
            std::string path;
            args >> path;
            s.close();
            cutecpp_status st = cutecpp_model_load(path.c_str(), cutecpp_model_default_params(), &s.model);
            if (st == CUTECPP_OK) {
                cutecpp_context_params cp = cutecpp_context_default_params();
                cp.n_threads = s.threads;
                st = cutecpp_context_init(s.model, cp, &s.ctx);
            }
            if (st != CUTECPP_OK) {
                std::printf("error bundle %d: %s\n", static_cast<int>(st), cutecpp_last_error());
                s.close();
                failed = true;
            }
            continue;
        }
        std::string out_path, why;
        size_t count = 0;
        std::vector<float> out;
        const auto t0 = std::chrono::steady_clock::now();
        cutecpp_status st = CUTECPP_ERR_INVALID_ARGUMENT;
        if (!(args >> out_path >> count) || count == 0) {
            why = "expected OUT COUNT";
        } else {
            out.assign(count + kGuard, NAN);
            st = run_job(s, op, args, count, out, why);
        }
        if (st == CUTECPP_OK) {
            for (size_t i = out.size() - kGuard; i < out.size(); ++i) {
                if (!std::isnan(out[i])) {
                    st = CUTECPP_ERR_INVALID_ARGUMENT;
                    why = "the result is larger than COUNT";
                    break;
                }
            }
            out.resize(out.size() - kGuard);
        }
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (st != CUTECPP_OK) {
            std::printf("error %s %d: %s\n", op.c_str(), static_cast<int>(st),
                        why.empty() ? cutecpp_last_error() : why.c_str());
            failed = true;
        } else if (!write_floats(out_path, out)) {
            std::printf("error %s: cannot write %s\n", op.c_str(), out_path.c_str());
            failed = true;
        } else {
            std::printf("ok %s %s %.1f\n", op.c_str(), out_path.c_str(), ms);
        }
        std::fflush(stdout);
    }
    s.close();
    return failed ? 1 : 0;
}
