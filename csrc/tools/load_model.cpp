// cutecpp-load: loads each bundle named on the command line through the C API
// and prints one line per file: "ok <path>" or "error <status> <path>: <msg>".
// Built with sanitizers, tests run it over a corpus of corrupted bundles; the
// exit status is 0 unless a sanitizer (or a crash) ends the process.
#include "cutecpp.h"

#include <cstdio>
#include <initializer_list>

int main(int argc, char ** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s BUNDLE.gguf [BUNDLE.gguf ...]\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; ++i) {
        for (bool use_mmap : {true, false}) {
            cutecpp_model_params params = cutecpp_model_default_params();
            params.use_mmap = use_mmap;
            cutecpp_model * model = nullptr;
            const cutecpp_status st = cutecpp_model_load(argv[i], params, &model);
            if (!use_mmap) {
                cutecpp_model_free(model);
                continue;  // second pass only exercises the read() path
            }
            if (st == CUTECPP_OK) {
                std::printf("ok %s\n", argv[i]);
            } else {
                std::printf("error %d %s: %s\n", static_cast<int>(st), argv[i], cutecpp_last_error());
            }
            cutecpp_model_free(model);
        }
    }
    return 0;
}
