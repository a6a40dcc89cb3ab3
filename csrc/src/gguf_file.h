// A GGUF file opened for reading: mapped (or read) once, parsed by ggml's GGUF
// reader, with every tensor's data range checked against the file length.
// Key access is typed: asking for a key with the wrong GGUF type is an error
// that names the key, never a ggml assertion.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

struct gguf_context;
struct ggml_context;
struct ggml_tensor;

namespace cutecpp {

// Read-only bytes of a file: an mmap, or a heap copy when mmap is off.
class FileBytes {
public:
    FileBytes(const std::string & path, bool use_mmap);
    ~FileBytes();
    FileBytes(const FileBytes &) = delete;
    FileBytes & operator=(const FileBytes &) = delete;

    const uint8_t * data() const { return data_; }
    size_t size() const { return size_; }
    bool mapped() const { return mapped_; }
    // Hands the mapped pages lying wholly inside [p, p + n) back to the kernel.
    // Safe at any time: the mapping is read-only and private, so a page touched
    // again is simply read from the file again. No-op when not mapped.
    void release(const void * p, size_t n) const;

private:
    const uint8_t * data_ = nullptr;
    size_t size_ = 0;
    bool mapped_ = false;
    std::vector<uint8_t> copy_;
};

class GGUFFile {
public:
    GGUFFile(const std::string & path, bool use_mmap);
    GGUFFile(const GGUFFile &) = delete;
    GGUFFile & operator=(const GGUFFile &) = delete;

    const std::string & path() const { return path_; }
    size_t file_size() const { return bytes_.size(); }
    bool mapped() const { return bytes_.mapped(); }
    uint32_t version() const;

    // Keys
    int64_t n_keys() const;
    std::string key_name(int64_t i) const;
    bool has(const std::string & key) const;
    bool is_array(const std::string & key) const;  // present and an array (for keys that may be either)
    std::string get_string(const std::string & key) const;
    uint32_t get_u32(const std::string & key) const;
    float get_f32(const std::string & key) const;
    double get_f64(const std::string & key) const;
    bool get_bool(const std::string & key) const;
    std::vector<uint32_t> get_u32_array(const std::string & key) const;
    std::vector<float> get_f32_array(const std::string & key) const;
    std::vector<std::string> get_string_array(const std::string & key) const;
    // Keys read so far through the getters above.
    const std::set<std::string> & keys_read() const { return keys_read_; }

    // Tensors: metadata made by ggml, data pointing into the file bytes.
    int64_t n_tensors() const;
    ggml_tensor * tensor(int64_t i) const;
    size_t tensor_bytes(int64_t i) const;
    // See FileBytes::release: for data that has been copied elsewhere.
    void release(const ggml_tensor * t) const;

private:
    // No real tensor comes near this; it keeps every size computation exact.
    static constexpr int64_t kMaxTensorElements = int64_t(1) << 40;

    void make_tensors();
    int64_t find_key(const std::string & key, int want_type) const;
    // An array key whose elements have element_type (a GGUF type), else a clear error.
    int64_t find_array(const std::string & key, int element_type) const;
    template <typename T>
    std::vector<T> numbers(const std::string & key, int element_type) const;

    // Members, not raw pointers freed in a destructor: a check that fails in
    // the constructor must still release what ggml allocated.
    struct GGUFFree {
        void operator()(gguf_context * c) const;
    };
    struct GGMLFree {
        void operator()(ggml_context * c) const;
    };

    std::string path_;
    FileBytes bytes_;
    std::unique_ptr<ggml_context, GGMLFree> meta_;
    std::unique_ptr<gguf_context, GGUFFree> gguf_;
    std::vector<ggml_tensor *> tensors_;  // in file order, data inside bytes_
    mutable std::set<std::string> keys_read_;
};

}  // namespace cutecpp
