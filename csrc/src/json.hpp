// A small JSON reader, enough for the sidecar (internal to the runtime; not installed).
// Objects keep their keys in order; numbers are doubles; strings are UTF-8 (\uXXXX decoded).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ctdn::json {

struct Value {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;

  // The member `key` of an object, or nullptr (also when this is not an object).
  const Value* find(const std::string& key) const;
  const char* type_name() const;
};

// Parses `text`; throws std::runtime_error("line L, column C: ...") on malformed JSON.
Value parse(const std::string& text);

}  // namespace ctdn::json
