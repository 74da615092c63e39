#include "veda/profile.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace veda {

namespace {

using nlohmann::json;
constexpr const char* kFormatName = "veda-profile";
const char* kAxisKeys[3] = {"distance_t", "distance_h", "distance_w"};

json estimator_to_json(const EstimatorParams& p) {
  json j = {{"pooled", p.pooled},           {"key_upper", p.key_upper},
            {"key_lower", p.key_lower},     {"query_upper", p.query_upper},
            {"log_valid", p.log_valid},     {"prefix_bias", p.prefix_bias}};
  for (int axis = 0; axis < 3; ++axis)
    j[kAxisKeys[axis]] = std::vector<double>(p.distance[axis].begin(), p.distance[axis].end());
  return j;
}

// Field access that turns nlohmann's exceptions into messages with the field's path.
Result<double> number_field(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) return format_error(fmt::format("{}: missing '{}'", where, key));
  if (!it->is_number()) return format_error(fmt::format("{}: '{}' must be a number", where, key));
  double v = it->get<double>();
  if (!std::isfinite(v)) return format_error(fmt::format("{}: '{}' must be finite", where, key));
  return v;
}

Result<int> int_field(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) return format_error(fmt::format("{}: missing '{}'", where, key));
  if (!it->is_number_integer())
    return format_error(fmt::format("{}: '{}' must be an integer", where, key));
  return it->get<int>();
}

Result<EstimatorParams> estimator_from_json(const json& j, const std::string& where) {
  if (!j.is_object()) return format_error(where + ": estimator must be an object");
  EstimatorParams p;
  VEDA_ASSIGN_OR_RETURN(p.pooled, number_field(j, "pooled", where));
  VEDA_ASSIGN_OR_RETURN(p.key_upper, number_field(j, "key_upper", where));
  VEDA_ASSIGN_OR_RETURN(p.key_lower, number_field(j, "key_lower", where));
  VEDA_ASSIGN_OR_RETURN(p.query_upper, number_field(j, "query_upper", where));
  VEDA_ASSIGN_OR_RETURN(p.log_valid, number_field(j, "log_valid", where));
  VEDA_ASSIGN_OR_RETURN(p.prefix_bias, number_field(j, "prefix_bias", where));
  for (int axis = 0; axis < 3; ++axis) {
    auto it = j.find(kAxisKeys[axis]);
    if (it == j.end() || !it->is_array() || it->size() != size_t(kDistanceBins))
      return format_error(fmt::format("{}: '{}' must be an array of {} numbers", where,
                                      kAxisKeys[axis], kDistanceBins));
    for (int bin = 0; bin < kDistanceBins; ++bin) {
      const json& v = (*it)[bin];
      if (!v.is_number() || !std::isfinite(v.get<double>()))
        return format_error(fmt::format("{}: '{}'[{}] must be a finite number", where, kAxisKeys[axis], bin));
      p.distance[axis][bin] = v.get<double>();
    }
    if (p.distance[axis][0] != 0)
      return format_error(fmt::format("{}: '{}'[0] is the reference bin and must be 0", where, kAxisKeys[axis]));
  }
  return p;
}

}  // namespace

const LayerProfile* Profile::find_layer(int layer) const {
  for (const LayerProfile& l : layers)
    if (l.layer == layer) return &l;
  return nullptr;
}

Result<const LayerProfile*> Profile::layer_for(int layer, int call_heads) const {
  const LayerProfile* found = find_layer(layer);
  if (!found) {
    std::string have;
    for (const LayerProfile& l : layers) have += (have.empty() ? "" : ", ") + std::to_string(l.layer);
    return invalid_argument(fmt::format("profile has no entry for layer {} (it has layers: {})",
                                        layer, have.empty() ? "none" : have));
  }
  if (int(found->heads.size()) != call_heads)
    return invalid_argument(fmt::format("profile layer {} has {} heads, the attention call has {}",
                                        layer, found->heads.size(), call_heads));
  return found;
}

std::vector<double> Profile::head_densities(const LayerProfile& layer, double target) const {
  std::vector<double> out;
  for (const HeadProfile& h : layer.heads)
    out.push_back(std::clamp(h.density * target / density, 1e-6, 1.0));
  return out;
}

Status validate_profile(const Profile& p) {
  if (!(p.density > 0 && p.density <= 1))
    return format_error(fmt::format("profile density {} is not in (0, 1]", p.density));
  if (p.heads <= 0) return format_error(fmt::format("profile head count {} must be positive", p.heads));
  if (p.tile_volume != 64 && p.tile_volume != 128)
    return format_error(fmt::format("profile tile volume {} must be 64 or 128 (slots a tile)", p.tile_volume));
  if (p.layers.empty()) return format_error("profile has no layers");
  std::set<int> seen;
  for (const LayerProfile& l : p.layers) {
    if (!seen.insert(l.layer).second) return format_error(fmt::format("profile lists layer {} twice", l.layer));
    if (int(l.heads.size()) != p.heads)
      return format_error(fmt::format("profile layer {} has {} heads, expected {}", l.layer,
                                      l.heads.size(), p.heads));
    for (size_t h = 0; h < l.heads.size(); ++h) {
      const HeadProfile& hp = l.heads[h];
      if (hp.tile.t <= 0 || hp.tile.h <= 0 || hp.tile.w <= 0 || hp.tile.slots() != p.tile_volume)
        return format_error(fmt::format("profile layer {} head {}: tile shape {} must have positive "
                                        "extents and take {} slots",
                                        l.layer, h, hp.tile.str(), p.tile_volume));
      if (!(hp.density > 0 && hp.density <= 1))
        return format_error(fmt::format("profile layer {} head {}: density {} is not in (0, 1]",
                                        l.layer, h, hp.density));
      if (!hp.estimator.is_finite())
        return format_error(fmt::format("profile layer {} head {}: estimator parameters must be finite",
                                        l.layer, h));
    }
  }
  return Status::ok();
}

std::string profile_to_json(const Profile& p) {
  json layers = json::array();
  for (const LayerProfile& l : p.layers) {
    json heads = json::array();
    for (size_t h = 0; h < l.heads.size(); ++h)
      heads.push_back({{"head", h},
                       {"tile", l.heads[h].tile.str()},
                       {"density", l.heads[h].density},
                       {"estimator", estimator_to_json(l.heads[h].estimator)}});
    layers.push_back({{"layer", l.layer}, {"heads", heads}});
  }
  json j = {{"format", kFormatName},
            {"version", Profile::kFormatVersion},
            {"density", p.density},
            {"heads", p.heads},
            {"tile_volume", p.tile_volume},
            {"calibration_captures", p.calibration_captures},
            {"layers", layers}};
  return j.dump(2) + "\n";
}

Result<Profile> profile_from_json(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return format_error("profile is not valid JSON (truncated or malformed)");
  if (!j.is_object()) return format_error("profile must be a JSON object");
  auto format = j.find("format");
  if (format == j.end() || !format->is_string() || format->get<std::string>() != kFormatName)
    return format_error(fmt::format("not a Veda profile: 'format' must be \"{}\"", kFormatName));
  VEDA_ASSIGN_OR_RETURN(int version, int_field(j, "version", "profile"));
  if (version != Profile::kFormatVersion)
    return format_error(fmt::format("unsupported profile version {} (this build reads version {})",
                                    version, Profile::kFormatVersion));
  Profile p;
  VEDA_ASSIGN_OR_RETURN(p.density, number_field(j, "density", "profile"));
  VEDA_ASSIGN_OR_RETURN(p.heads, int_field(j, "heads", "profile"));
  VEDA_ASSIGN_OR_RETURN(p.tile_volume, int_field(j, "tile_volume", "profile"));
  if (auto it = j.find("calibration_captures"); it != j.end()) {
    if (!it->is_array()) return format_error("profile: 'calibration_captures' must be an array of strings");
    for (const json& c : *it) {
      if (!c.is_string()) return format_error("profile: 'calibration_captures' must be an array of strings");
      p.calibration_captures.push_back(c.get<std::string>());
    }
  }
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) return format_error("profile: 'layers' must be an array");
  for (const json& lj : *layers) {
    if (!lj.is_object()) return format_error("profile: each layer must be an object");
    LayerProfile l;
    VEDA_ASSIGN_OR_RETURN(l.layer, int_field(lj, "layer", "profile layer"));
    const std::string where = fmt::format("profile layer {}", l.layer);
    auto heads = lj.find("heads");
    if (heads == lj.end() || !heads->is_array()) return format_error(where + ": 'heads' must be an array");
    for (size_t h = 0; h < heads->size(); ++h) {
      const json& hj = (*heads)[h];
      const std::string head_where = fmt::format("{} head {}", where, h);
      if (!hj.is_object()) return format_error(head_where + ": must be an object");
      VEDA_ASSIGN_OR_RETURN(int index, int_field(hj, "head", head_where));
      if (index != int(h)) return format_error(fmt::format("{}: heads must be listed in order, found head {}", head_where, index));
      HeadProfile hp;
      auto tile = hj.find("tile");
      if (tile == hj.end() || !tile->is_string()) return format_error(head_where + ": 'tile' must be a string TxHxW");
      auto shape = TileShape::parse(tile->get<std::string>());
      if (!shape) return format_error(head_where + ": " + shape.status().message());
      hp.tile = *shape;
      VEDA_ASSIGN_OR_RETURN(hp.density, number_field(hj, "density", head_where));
      auto est = hj.find("estimator");
      if (est == hj.end()) return format_error(head_where + ": missing 'estimator'");
      VEDA_ASSIGN_OR_RETURN(hp.estimator, estimator_from_json(*est, head_where + " estimator"));
      l.heads.push_back(hp);
    }
    p.layers.push_back(std::move(l));
  }
  VEDA_RETURN_IF_ERROR(validate_profile(p));
  return p;
}

Status save_profile(const std::string& path, const Profile& profile) {
  VEDA_RETURN_IF_ERROR(validate_profile(profile));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return io_error("cannot open '" + path + "' for writing");
  out << profile_to_json(profile);
  out.close();
  if (!out) return io_error("failed writing profile '" + path + "'");
  return Status::ok();
}

Result<Profile> load_profile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error("cannot open profile '" + path + "'");
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto profile = profile_from_json(buffer.str());
  if (!profile) return Status(profile.status().code(), path + ": " + profile.status().message());
  return profile;
}

}  // namespace veda
