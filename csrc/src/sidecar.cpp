// Sidecar::read and the checks every engine kind shares (same rules and messages as
// ctdn.deploy.sidecar in Python).

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include "check.hpp"
#include "ctdn/runtime.hpp"
#include "json.hpp"

namespace ctdn {

namespace {

constexpr const char* kFormat = "ctdn-engine/1";
constexpr const char* kNoRebuild = "ctdn-build-engine (see its --help)";  // a sidecar without "rebuild"
// The top-level fields every sidecar has (ctdn.deploy.sidecar._REQUIRED).
constexpr const char* kRequired[] = {"format", "kind", "ctdn_version", "created", "model", "hu_window", "multiple",
                                     "io", "shapes", "precision", "device", "versions", "compatibility", "bytes",
                                     "rebuild"};

class Reader {
 public:
  Reader(const std::string& path, const json::Value& root) : path_(path), root_(root) {
    const json::Value* rb = root.find("rebuild");
    rebuild_ = rb && rb->type == json::Value::Type::String && !rb->string.empty() ? rb->string : kNoRebuild;
  }

  // The value at a dotted path ("device.type"), or nullptr when any part is absent.
  const json::Value* at(const std::string& dotted) const {
    const json::Value* v = &root_;
    size_t start = 0;
    for (;;) {
      size_t dot = dotted.find('.', start);
      v = v->find(dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
      if (!v || dot == std::string::npos) return v;
      start = dot + 1;
    }
  }

  [[noreturn]] void bad(const std::string& field, const std::string& what) const {
    throw Error(path_ + ": field '" + field + "' " + what + ": corrupt; rebuild it on this machine: " + rebuild_);
  }

  const json::Value& need(const std::string& field, json::Value::Type type, const char* want) const {
    const json::Value* v = at(field);
    if (!v) bad(field, "is missing");
    if (v->type != type) bad(field, std::string("must be ") + want + ", got " + v->type_name());
    return *v;
  }

  std::string str(const std::string& field) const {
    return need(field, json::Value::Type::String, "a string").string;
  }

  std::string str_or(const std::string& field, const std::string& fallback) const {
    const json::Value* v = at(field);
    if (!v || v->type == json::Value::Type::Null) return fallback;
    if (v->type != json::Value::Type::String) bad(field, std::string("must be a string, got ") + v->type_name());
    return v->string;
  }

  static bool integral(double d) { return std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15; }

  long long integer(const json::Value& v, const std::string& field) const {
    if (v.type != json::Value::Type::Number || !integral(v.number))
      bad(field, std::string("must be an integer, got ") + v.type_name());
    return static_cast<long long>(v.number);
  }

  long long integer(const std::string& field) const {
    return integer(need(field, json::Value::Type::Number, "an integer"), field);
  }

  // [min, opt, max], positive integers in order.
  void range(const std::string& field, int& lo, int& opt, int& hi) const {
    const auto& v = need(field, json::Value::Type::Array, "[min, opt, max]");
    if (v.array.size() != 3) bad(field, "must be [min, opt, max]");
    long long a = integer(v.array[0], field), b = integer(v.array[1], field), c = integer(v.array[2], field);
    if (!(1 <= a && a <= b && b <= c && c <= (1LL << 30))) bad(field, "must be [min, opt, max] with 1 <= min <= opt <= max");
    lo = int(a);
    opt = int(b);
    hi = int(c);
  }

 private:
  const std::string& path_;
  const json::Value& root_;
  std::string rebuild_;
};

}  // namespace

Sidecar Sidecar::read(const std::string& json_path) {
  std::ifstream f(json_path, std::ios::binary);
  if (!f)
    throw Error(json_path + " not found: every ctdn engine/package has a sidecar beside it; rebuild the file with "
                "ctdn-build-engine (TensorRT) or ctdn.export.to_aoti (AOTInductor)");
  std::stringstream buf;
  buf << f.rdbuf();
  json::Value root;
  try {
    root = json::parse(buf.str());
  } catch (const std::exception& e) {
    throw Error(json_path + " is not a readable JSON sidecar (" + e.what() + ")");
  }
  if (root.type != json::Value::Type::Object)
    throw Error(json_path + " is not a ctdn sidecar (a JSON object expected)");
  Reader r(json_path, root);
  Sidecar sc;
  sc.path = json_path;
  const json::Value* rb = root.find("rebuild");
  sc.rebuild = rb && rb->type == json::Value::Type::String && !rb->string.empty() ? rb->string : kNoRebuild;
  const json::Value* fmt = root.find("format");
  if (!fmt || fmt->type != json::Value::Type::String || fmt->string != kFormat)
    throw Error(json_path + ": format is " + (fmt && fmt->type == json::Value::Type::String ? "'" + fmt->string + "'" : "None") +
                " but this ctdn reads '" + kFormat + "'; rebuild it on this machine: " + sc.rebuild);
  std::string missing;
  for (const char* k : kRequired)
    if (!root.find(k)) missing += (missing.empty() ? "" : ", ") + std::string(k);
  if (!missing.empty())
    throw Error(json_path + " lacks " + missing + ": corrupt; rebuild it on this machine: " + sc.rebuild);
  sc.kind = r.str("kind");
  sc.model_name = r.str("model.name");
  sc.fingerprint = r.str("model.fingerprint");
  sc.precision = r.str("precision");
  const auto& win = r.need("hu_window", json::Value::Type::Array, "[low, high]");
  if (win.array.size() != 2 || win.array[0].type != json::Value::Type::Number ||
      win.array[1].type != json::Value::Type::Number || !(win.array[0].number < win.array[1].number))
    r.bad("hu_window", "must be [low, high] with low < high");
  sc.hu_lo = float(win.array[0].number);
  sc.hu_hi = float(win.array[1].number);
  long long m = r.integer("multiple");
  if (m < 1 || m > 4096) r.bad("multiple", "must be a positive integer");
  sc.multiple = int(m);
  r.range("shapes.batch", sc.batch_min, sc.batch_opt, sc.batch_max);
  r.range("shapes.height", sc.height_min, sc.height_opt, sc.height_max);
  r.range("shapes.width", sc.width_min, sc.width_opt, sc.width_max);
  sc.device_type = r.str("device.type");
  sc.device_name = r.str_or("device.name", "");
  sc.compute_capability = r.str_or("device.compute_capability", "");
  sc.tensorrt_version = r.str_or("versions.tensorrt", "");
  sc.cuda_version = r.str_or("versions.cuda", "");
  sc.torch_version = r.str_or("versions.torch", "");
  sc.hardware_compatibility = r.str_or("compatibility.hardware", "none");
  if (const json::Value* vc = r.at("compatibility.version_compatible")) {
    if (vc->type != json::Value::Type::Bool && vc->type != json::Value::Type::Null)
      r.bad("compatibility.version_compatible", std::string("must be true or false, got ") + vc->type_name());
    sc.version_compatible = vc->type == json::Value::Type::Bool && vc->boolean;
  }
  sc.bytes = r.integer("bytes");
  if (sc.bytes < 0) r.bad("bytes", "must be the file's size in bytes");
  return sc;
}

namespace detail {

std::string file_name(const Sidecar& sc) {
  std::string file = sc.path.size() > 5 && sc.path.compare(sc.path.size() - 5, 5, ".json") == 0
                         ? sc.path.substr(0, sc.path.size() - 5)
                         : sc.path;
  size_t slash = file.find_last_of('/');
  return slash == std::string::npos ? file : file.substr(slash + 1);
}

std::string mismatch_message(const Sidecar& sc, const std::string& field, const std::string& in_file,
                             const std::string& here, const std::string& why) {
  return file_name(sc) + ": " + field + " is " + in_file + " in its sidecar but " + here + " here" +
         (why.empty() ? "" : " (" + why + ")") + "; rebuild it on this machine: " + sc.rebuild;
}

void mismatch(const Sidecar& sc, const Options& o, const std::string& field, const std::string& in_file,
              const std::string& here, const std::string& why) {
  std::string msg = mismatch_message(sc, field, in_file, here, why);
  if (o.check) throw Error(msg);
  std::cerr << "ctdn: " << msg << " (check disabled: loading anyway)" << std::endl;
}

void check_common(const std::string& path, const Sidecar& sc, const Options& o, const std::string& kind) {
  if (sc.kind != kind)
    throw Error(file_name(sc) + ": kind is '" + sc.kind + "' in its sidecar but this loader opens '" + kind +
                "' files; use the " + sc.kind + " backend, or rebuild it on this machine: " + sc.rebuild);
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    throw Error(path + " not found (its sidecar is there); rebuild it on this machine: " + sc.rebuild);
  long long size = static_cast<long long>(st.st_size);
  if (size != sc.bytes)
    mismatch(sc, o, "bytes", std::to_string(sc.bytes), std::to_string(size),
             "the file is corrupt or was replaced after its sidecar was written");
}

std::string public_version(const std::string& v) { return v.substr(0, v.find('+')); }

std::string major_minor(const std::string& v) {
  size_t dot = v.find('.');
  if (dot == std::string::npos) return v;
  size_t dot2 = v.find('.', dot + 1);
  return dot2 == std::string::npos ? v : v.substr(0, dot2);
}

}  // namespace detail
}  // namespace ctdn
