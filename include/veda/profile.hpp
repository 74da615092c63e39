// Profile: what calibration produces and inference reads. Per (layer, head): the tile shape, the
// estimator parameters and the head's share of the density budget; plus the overall density
// target and a format version. Stored as JSON.
#pragma once
#include <string>
#include <vector>

#include "veda/estimator.hpp"
#include "veda/status.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

struct HeadProfile {
  TileShape tile{4, 4, 4};
  double density = 0.05;  // this head's density at the profile's target density
  EstimatorParams estimator;
};

struct LayerProfile {
  int layer = -1;  // -1: captures without a layer index
  std::vector<HeadProfile> heads;
};

struct Profile {
  static constexpr int kFormatVersion = 1;
  double density = 0.05;  // overall target: the mean of the heads' densities
  int heads = 0;
  int tile_volume = kDefaultTileVolume;
  std::vector<LayerProfile> layers;
  std::vector<std::string> calibration_captures;  // sources, to tell held-out data apart

  const LayerProfile* find_layer(int layer) const;
  // The layer's heads, checked against the attention call that will use them.
  Result<const LayerProfile*> layer_for(int layer, int heads) const;
  // Per-head densities for a requested overall density: the profile's split scaled to it,
  // clamped to (0, 1].
  std::vector<double> head_densities(const LayerProfile& layer, double density) const;
};

// Consistent: positive heads, one entry per head in every layer, tile shapes taking tile_volume
// slots (TileShape::slots), densities in (0, 1], finite estimator parameters, no duplicate layers.
Status validate_profile(const Profile& profile);

std::string profile_to_json(const Profile& profile);  // pretty-printed
Result<Profile> profile_from_json(const std::string& text);
Status save_profile(const std::string& path, const Profile& profile);
Result<Profile> load_profile(const std::string& path);

}  // namespace veda
