// Sidecar checks shared by the engine kinds (internal to the runtime; not installed). The messages are
// the ones ctdn.deploy.sidecar gives in Python: the field, both values, and the rebuild command.
#pragma once

#include <string>

#include "ctdn/runtime.hpp"

namespace ctdn::detail {

// "<file name>: <field> is <in_file> in its sidecar but <here> here (<why>); rebuild it on this machine:
// <rebuild>", word for word ctdn.deploy.sidecar's (values quoted by the caller like Python's repr:
// "'9.0'", "'2.12.0'", numbers bare; no " (<why>)" when why is empty).
std::string mismatch_message(const Sidecar& sc, const std::string& field, const std::string& in_file,
                             const std::string& here, const std::string& why = "");

// Throws Error(mismatch_message(...)) when o.check, else prints it to stderr as a warning.
void mismatch(const Sidecar& sc, const Options& o, const std::string& field, const std::string& in_file,
              const std::string& here, const std::string& why = "");

// The checks every kind shares: the sidecar's kind is `kind` (the loader's; always an Error), and the
// engine/package file exists (always) with the size the sidecar records (else corrupt or replaced).
void check_common(const std::string& path, const Sidecar& sc, const Options& o, const std::string& kind);

// "2.13.0+cpu" -> "2.13.0": versions compare without the local build tag.
std::string public_version(const std::string& v);

// "10.13.0.35" -> "10.13": TensorRT engines are tied to major.minor.
std::string major_minor(const std::string& v);

}  // namespace ctdn::detail
