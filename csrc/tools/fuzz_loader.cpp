// libFuzzer target: feeds arbitrary bytes to the bundle loader through a
// memfd, so the real path (open, fstat, mmap, parse, validate) is exercised.
// Build and run: tools/fuzz_loader.sh
#include "cutecpp.h"

#include <cstdint>
#include <cstdio>
#include <sys/mman.h>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    const int fd = memfd_create("bundle", MFD_CLOEXEC);
    if (fd < 0) return 0;
    size_t done = 0;
    while (done < size) {
        const ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) break;
        done += static_cast<size_t>(n);
    }
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    cutecpp_model * model = nullptr;
    if (cutecpp_model_load(path, cutecpp_model_default_params(), &model) == CUTECPP_OK) {
        cutecpp_model_info_json(model);
        cutecpp_model_free(model);
    }
    close(fd);
    return 0;
}
