// Minimal JSON writing for the info strings the C API returns.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace cutecpp::json {

inline std::string str(const std::string & s) {
    std::string out = "\"";
    for (unsigned char ch : s) {
        switch (ch) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (ch < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
                    out += buf;
                } else {
                    out += static_cast<char>(ch);
                }
        }
    }
    return out + "\"";
}

inline std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.9g", v);
    return buf;
}

// The shortest decimal that reads back as exactly v (a float64, or with single a float32),
// always with a fraction or exponent so that JSON readers see a float ("3.0", not "3").
inline std::string num_exact(double v, bool single = false) {
    char buf[40];
    for (int digits = 1; digits <= 17; ++digits) {
        std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
        if (single ? std::strtof(buf, nullptr) == static_cast<float>(v) : std::strtod(buf, nullptr) == v) break;
    }
    std::string out = buf;
    if (out.find_first_of(".eni") == std::string::npos) out += ".0";
    return out;
}

template <typename T, typename F>
std::string array(const std::vector<T> & items, F && each) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + each(items[i]);
    return out + "]";
}

// {"a": 1, "b": "x"} from already-encoded values.
inline std::string object(const std::vector<std::pair<std::string, std::string>> & fields) {
    std::string out = "{";
    for (size_t i = 0; i < fields.size(); ++i) {
        out += (i ? ", " : "") + str(fields[i].first) + ": " + fields[i].second;
    }
    return out + "}";
}

}  // namespace cutecpp::json
