// A calibration profile as the CPU forward's tile-sparse settings (veda/dit.hpp use_profile).
#include <fmt/core.h>

#include "veda/dit.hpp"
#include "veda/estimator.hpp"
#include "veda/profile.hpp"

namespace veda {

Status use_profile(std::shared_ptr<const Profile> profile, int num_layers, int heads,
                   double density, SparseAttentionConfig* sparse) {
  if (!profile) return invalid_argument("use_profile: no profile");
  if (profile->heads != heads) {
    return invalid_argument(
        fmt::format("profile is for {} heads, the model has {}", profile->heads, heads));
  }
  sparse->layer_head_shapes.assign(size_t(num_layers), {});
  sparse->layer_head_density.assign(size_t(num_layers), {});
  for (const LayerProfile& layer : profile->layers) {
    if (layer.layer < 0 || layer.layer >= num_layers) continue;  // e.g. captures without a layer
    for (const HeadProfile& head : layer.heads) {
      sparse->layer_head_shapes[layer.layer].push_back(head.tile);
    }
    sparse->layer_head_density[layer.layer] = profile->head_densities(layer, density);
  }
  // Layers the profile covers are scored by their fitted estimators; others by `score`.
  sparse->scorer = [profile](int layer, const TileStats& q, const TileStats& k,
                             const HeadLayouts& layouts, float scale) -> Result<Tensor> {
    const LayerProfile* lp = profile->find_layer(layer);
    if (lp == nullptr) return Tensor();
    std::vector<EstimatorParams> params;
    for (const HeadProfile& head : lp->heads) params.push_back(head.estimator);
    return score_tiles_estimated(q, k, layouts, scale, params);
  };
  return Status::ok();
}

}  // namespace veda
