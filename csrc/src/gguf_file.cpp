#include "gguf_file.h"

#include "error.h"

#include "ggml.h"
#include "gguf.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace cutecpp {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) close(fd);
    }
};

// ggml's GGUF reader reports why it refused a file only through ggml's log.
// While it parses, route that log here and keep the first error line.
class LogCapture {
public:
    LogCapture() {
        mutex().lock();
        ggml_log_get(&prev_cb_, &prev_ud_);
        ggml_log_set(&LogCapture::callback, this);
    }
    ~LogCapture() {
        ggml_log_set(prev_cb_, prev_ud_);
        mutex().unlock();
    }
    const std::string & first_error() const { return first_error_; }

private:
    static std::mutex & mutex() {
        static std::mutex m;
        return m;
    }
    static void callback(ggml_log_level level, const char * text, void * ud) {
        auto * self = static_cast<LogCapture *>(ud);
        if (level != GGML_LOG_LEVEL_ERROR) {
            // Not ours (another thread may be logging): pass it on.
            if (self->prev_cb_) self->prev_cb_(level, text, self->prev_ud_);
            return;
        }
        if (!self->first_error_.empty() || text == nullptr) return;
        std::string line(text);
        // "gguf_init_from_reader: tensor 'x' ..." -> "tensor 'x' ..."
        const size_t colon = line.find(": ");
        if (colon != std::string::npos && line.find(' ') > colon) line = line.substr(colon + 2);
        while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
        self->first_error_ = line;
    }

    ggml_log_callback prev_cb_ = nullptr;
    void * prev_ud_ = nullptr;
    std::string first_error_;
};

}  // namespace

FileBytes::FileBytes(const std::string & path, bool use_mmap) {
    Fd f;
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever;
    // it changes nothing for the regular files we accept.
    f.fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f.fd < 0) {
        const int err = errno;
        if (err == ENOENT) fail(CUTECPP_ERR_IO, "no such file");
        fail(CUTECPP_ERR_IO, "cannot open: " + errno_text(err));
    }
    struct stat st;
    if (fstat(f.fd, &st) != 0) fail(CUTECPP_ERR_IO, "cannot stat: " + errno_text(errno));
    if (S_ISDIR(st.st_mode)) fail(CUTECPP_ERR_IO, "is a directory, not a model file");
    if (!S_ISREG(st.st_mode)) fail(CUTECPP_ERR_IO, "is not a regular file");
    if (st.st_size == 0) fail(CUTECPP_ERR_FORMAT, "file is empty, not a GGUF model file");
    size_ = static_cast<size_t>(st.st_size);

    if (use_mmap) {
        void * p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, f.fd, 0);
        if (p == MAP_FAILED) fail(CUTECPP_ERR_IO, "cannot mmap: " + errno_text(errno));
        data_ = static_cast<const uint8_t *>(p);
        mapped_ = true;
        return;
    }
    copy_.resize(size_);
    size_t done = 0;
    while (done < size_) {
        const ssize_t n = read(f.fd, copy_.data() + done, size_ - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail(CUTECPP_ERR_IO, std::string("cannot read: ") + (n == 0 ? "file shrank" : errno_text(errno)));
        done += static_cast<size_t>(n);
    }
    data_ = copy_.data();
}

void FileBytes::release(const void * p, size_t n) const {
    if (!mapped_) return;
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
    if (end > begin) madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

FileBytes::~FileBytes() {
    if (mapped_) munmap(const_cast<uint8_t *>(data_), size_);
}

GGUFFile::GGUFFile(const std::string & path, bool use_mmap) : path_(path), bytes_(path, use_mmap) {
    static const char magic[4] = {'G', 'G', 'U', 'F'};
    if (bytes_.size() < 4 || std::memcmp(bytes_.data(), magic, 4) != 0) {
        fail(CUTECPP_ERR_FORMAT, "not a GGUF file (bad magic)");
    }
    constexpr size_t kHeaderBytes = 4 + 4 + 8 + 8;  // magic, version, tensor count, key count
    if (bytes_.size() < kHeaderBytes) {
        fail(CUTECPP_ERR_FORMAT, "truncated: " + std::to_string(bytes_.size()) + " bytes, shorter than a GGUF header");
    }
    {
        // Parse only: no ggml context. ggml's reader lets through shapes whose
        // element count ggml_new_tensor() then rejects with an abort (found by
        // fuzzing), so tensors are created below, after our own shape check.
        LogCapture log;
        gguf_init_params params = {/*no_alloc =*/true, /*ctx =*/nullptr};
        gguf_.reset(gguf_init_from_buffer(bytes_.data(), bytes_.size(), params));
        if (!gguf_) {
            const std::string why = log.first_error().empty() ? "unreadable GGUF" : log.first_error();
            fail(CUTECPP_ERR_FORMAT, why);
        }
    }
    make_tensors();
}

void GGUFFile::make_tensors() {
    const int64_t n = n_tensors();
    ggml_init_params params = {/*mem_size =*/static_cast<size_t>(n + 1) * ggml_tensor_overhead(),
                               /*mem_buffer =*/nullptr, /*no_alloc =*/true};
    meta_.reset(ggml_init(params));
    if (!meta_) fail(CUTECPP_ERR_OUT_OF_MEMORY, "cannot allocate metadata for " + std::to_string(n) + " tensors");

    const size_t size = bytes_.size();
    const size_t data_offset = gguf_get_data_offset(gguf_.get());
    tensors_.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        const std::string name = gguf_get_tensor_name(gguf_.get(), i);
        const int64_t * ne = gguf_get_tensor_ne(gguf_.get(), i);
        int64_t elements = 1;
        for (int d = 0; d < GGML_MAX_DIMS; ++d) {
            // ggml checked ne >= 0; bound each factor so the product cannot overflow.
            if (ne[d] > kMaxTensorElements || elements > kMaxTensorElements / std::max<int64_t>(ne[d], 1)) {
                fail(CUTECPP_ERR_FORMAT, "tensor '" + name + "' has an absurd shape (more than 2^40 elements)");
            }
            elements *= std::max<int64_t>(ne[d], 1);
        }
        // ggml checked that offsets are consecutive and sizes do not overflow;
        // it does not check that the data is actually in the file.
        const size_t off = gguf_get_tensor_offset(gguf_.get(), i);
        const size_t nbytes = gguf_get_tensor_size(gguf_.get(), i);
        if (data_offset > size || off > size - data_offset || nbytes > size - data_offset - off) {
            fail(CUTECPP_ERR_FORMAT, "truncated: tensor '" + name + "' needs bytes up to " +
                                         std::to_string(data_offset + off + nbytes) + " but the file has " +
                                         std::to_string(size));
        }
        ggml_tensor * t = ggml_new_tensor(meta_.get(), gguf_get_tensor_type(gguf_.get(), i), GGML_MAX_DIMS, ne);
        ggml_set_name(t, name.c_str());
        t->data = const_cast<uint8_t *>(bytes_.data() + data_offset + off);
        tensors_.push_back(t);
    }
}

void GGUFFile::GGUFFree::operator()(gguf_context * c) const { gguf_free(c); }
void GGUFFile::GGMLFree::operator()(ggml_context * c) const { ggml_free(c); }

uint32_t GGUFFile::version() const { return gguf_get_version(gguf_.get()); }
int64_t GGUFFile::n_keys() const { return gguf_get_n_kv(gguf_.get()); }
std::string GGUFFile::key_name(int64_t i) const { return gguf_get_key(gguf_.get(), i); }
bool GGUFFile::has(const std::string & key) const { return gguf_find_key(gguf_.get(), key.c_str()) >= 0; }
bool GGUFFile::is_array(const std::string & key) const {
    const int64_t id = gguf_find_key(gguf_.get(), key.c_str());
    return id >= 0 && gguf_get_kv_type(gguf_.get(), id) == GGUF_TYPE_ARRAY;
}
int64_t GGUFFile::n_tensors() const { return gguf_get_n_tensors(gguf_.get()); }
size_t GGUFFile::tensor_bytes(int64_t i) const { return gguf_get_tensor_size(gguf_.get(), i); }

void GGUFFile::release(const ggml_tensor * t) const { bytes_.release(t->data, ggml_nbytes(t)); }

ggml_tensor * GGUFFile::tensor(int64_t i) const { return tensors_.at(static_cast<size_t>(i)); }

namespace {
const char * type_name(int type) {
    switch (type) {
        case GGUF_TYPE_UINT8: return "uint8";
        case GGUF_TYPE_INT8: return "int8";
        case GGUF_TYPE_UINT16: return "uint16";
        case GGUF_TYPE_INT16: return "int16";
        case GGUF_TYPE_UINT32: return "uint32";
        case GGUF_TYPE_INT32: return "int32";
        case GGUF_TYPE_FLOAT32: return "float32";
        case GGUF_TYPE_BOOL: return "bool";
        case GGUF_TYPE_STRING: return "string";
        case GGUF_TYPE_ARRAY: return "array";
        case GGUF_TYPE_UINT64: return "uint64";
        case GGUF_TYPE_INT64: return "int64";
        case GGUF_TYPE_FLOAT64: return "float64";
        default: return "unknown";
    }
}
}  // namespace

int64_t GGUFFile::find_key(const std::string & key, int want_type) const {
    const int64_t id = gguf_find_key(gguf_.get(), key.c_str());
    if (id < 0) fail(CUTECPP_ERR_MODEL, "missing key '" + key + "'");
    keys_read_.insert(key);
    const int type = gguf_get_kv_type(gguf_.get(), id);
    if (type != want_type) {
        std::string got = type_name(type);
        if (type == GGUF_TYPE_ARRAY) got = std::string("array of ") + type_name(gguf_get_arr_type(gguf_.get(), id));
        fail(CUTECPP_ERR_MODEL, "key '" + key + "' must be of type " + type_name(want_type) + " but is " + got);
    }
    return id;
}

std::string GGUFFile::get_string(const std::string & key) const {
    return gguf_get_val_str(gguf_.get(), find_key(key, GGUF_TYPE_STRING));
}

uint32_t GGUFFile::get_u32(const std::string & key) const {
    return gguf_get_val_u32(gguf_.get(), find_key(key, GGUF_TYPE_UINT32));
}

float GGUFFile::get_f32(const std::string & key) const {
    return gguf_get_val_f32(gguf_.get(), find_key(key, GGUF_TYPE_FLOAT32));
}

double GGUFFile::get_f64(const std::string & key) const {
    return gguf_get_val_f64(gguf_.get(), find_key(key, GGUF_TYPE_FLOAT64));
}

bool GGUFFile::get_bool(const std::string & key) const {
    return gguf_get_val_bool(gguf_.get(), find_key(key, GGUF_TYPE_BOOL));
}

int64_t GGUFFile::find_array(const std::string & key, int element_type) const {
    const int64_t id = find_key(key, GGUF_TYPE_ARRAY);
    if (gguf_get_arr_type(gguf_.get(), id) != element_type) {
        fail(CUTECPP_ERR_MODEL, "key '" + key + "' must be an array of " + type_name(element_type) +
                                    " but is an array of " + type_name(gguf_get_arr_type(gguf_.get(), id)));
    }
    return id;
}

template <typename T>
std::vector<T> GGUFFile::numbers(const std::string & key, int element_type) const {
    const int64_t id = find_array(key, element_type);
    const auto * p = static_cast<const T *>(gguf_get_arr_data(gguf_.get(), id));
    return std::vector<T>(p, p + gguf_get_arr_n(gguf_.get(), id));
}

std::vector<uint32_t> GGUFFile::get_u32_array(const std::string & key) const {
    return numbers<uint32_t>(key, GGUF_TYPE_UINT32);
}

std::vector<float> GGUFFile::get_f32_array(const std::string & key) const {
    return numbers<float>(key, GGUF_TYPE_FLOAT32);
}

std::vector<std::string> GGUFFile::get_string_array(const std::string & key) const {
    const int64_t id = find_array(key, GGUF_TYPE_STRING);
    std::vector<std::string> out;
    const size_t n = gguf_get_arr_n(gguf_.get(), id);
    for (size_t i = 0; i < n; ++i) out.emplace_back(gguf_get_arr_str(gguf_.get(), id, i));
    return out;
}

}  // namespace cutecpp
