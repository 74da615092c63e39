// Profiles: round trip through JSON and files; malformed, unknown-version and mismatched
// profiles are rejected with a clear error.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/test_data.hpp"
#include "veda/profile.hpp"

namespace veda {
namespace {

Profile random_profile(uint64_t seed, int heads = 3) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  const TileShape shapes[] = {{4, 4, 4}, {16, 2, 2}, {1, 8, 8}, {3, 5, 4}};  // 3x5x4: 60 tokens
  Profile p;
  p.density = 0.05;
  p.heads = heads;
  p.calibration_captures = {"a.safetensors", "b.safetensors"};
  for (int layer : {3, 6}) {
    LayerProfile l;
    l.layer = layer;
    for (int h = 0; h < heads; ++h) {
      HeadProfile hp;
      hp.tile = shapes[rng() % 4];
      hp.density = 0.025 + 0.05 * std::uniform_real_distribution<double>()(rng);
      std::array<double, EstimatorParams::kNumFree> v;
      for (double& x : v) x = normal(rng);
      hp.estimator = EstimatorParams::from_vector(v);
      l.heads.push_back(hp);
    }
    p.layers.push_back(l);
  }
  return p;
}

void expect_equal(const Profile& a, const Profile& b) {
  EXPECT_EQ(a.density, b.density);
  EXPECT_EQ(a.heads, b.heads);
  EXPECT_EQ(a.tile_volume, b.tile_volume);
  EXPECT_EQ(a.calibration_captures, b.calibration_captures);
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    EXPECT_EQ(a.layers[l].layer, b.layers[l].layer);
    ASSERT_EQ(a.layers[l].heads.size(), b.layers[l].heads.size());
    for (size_t h = 0; h < a.layers[l].heads.size(); ++h) {
      const HeadProfile &x = a.layers[l].heads[h], &y = b.layers[l].heads[h];
      EXPECT_EQ(x.tile, y.tile);
      EXPECT_EQ(x.density, y.density);
      EXPECT_EQ(x.estimator.to_vector(), y.estimator.to_vector());  // JSON doubles round-trip exactly
    }
  }
}

// The error of parsing `text`, which must fail.
std::string rejection(const std::string& text) {
  auto p = profile_from_json(text);
  EXPECT_FALSE(p) << "accepted: " << text.substr(0, 200);
  return p ? "" : p.status().to_string();
}

TEST(ProfileTest, RoundTripsThroughJsonAndFile) {
  Profile p = random_profile(std::random_device{}());
  auto parsed = profile_from_json(profile_to_json(p));
  ASSERT_TRUE(parsed) << parsed.status().to_string();
  expect_equal(p, *parsed);

  const std::string path = test::temp_dir() + "/profile.json";
  ASSERT_TRUE(save_profile(path, p).is_ok());
  auto loaded = load_profile(path);
  ASSERT_TRUE(loaded) << loaded.status().to_string();
  expect_equal(p, *loaded);
}

TEST(ProfileTest, RejectsTruncatedAndMalformedJson) {
  const std::string text = profile_to_json(random_profile(std::random_device{}()));
  EXPECT_NE(rejection(text.substr(0, text.size() / 2)).find("not valid JSON"), std::string::npos);
  rejection("");
  rejection("[1, 2, 3]");
  rejection("{\"format\": \"something-else\", \"version\": 1}");
  auto missing = load_profile(test::temp_dir() + "/does_not_exist.json");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.status().code(), ErrorCode::kIoError);
}

TEST(ProfileTest, RejectsUnknownVersion) {
  nlohmann::json j = nlohmann::json::parse(profile_to_json(random_profile(std::random_device{}())));
  j["version"] = Profile::kFormatVersion + 1;
  std::string error = rejection(j.dump());
  EXPECT_NE(error.find("unsupported profile version"), std::string::npos) << error;
  EXPECT_NE(error.find("format error"), std::string::npos) << error;
  j.erase("version");
  rejection(j.dump());
}

TEST(ProfileTest, RejectsWrongHeadCount) {
  nlohmann::json j = nlohmann::json::parse(profile_to_json(random_profile(std::random_device{}())));
  j["layers"][1]["heads"].erase(2);
  std::string error = rejection(j.dump());
  EXPECT_NE(error.find("layer 6 has 2 heads, expected 3"), std::string::npos) << error;
}

TEST(ProfileTest, RejectsBadTileShapesAndValues) {
  const nlohmann::json good = nlohmann::json::parse(profile_to_json(random_profile(std::random_device{}())));
  // 4x4x2: 32 tokens (no slot count); 4x4x8: 128 slots in a 64-slot profile.
  for (const char* tile : {"4x4x2", "4x4x8", "4x4", "axbxc", "0x8x8", "4x4x4x1"}) {
    nlohmann::json j = good;
    j["layers"][0]["heads"][1]["tile"] = tile;
    std::string error = rejection(j.dump());
    EXPECT_NE(error.find("head 1"), std::string::npos) << tile << ": " << error;
  }
  nlohmann::json j = good;
  j["layers"][0]["heads"][0]["density"] = 1.5;
  rejection(j.dump());
  j = good;
  j["layers"][0]["heads"][0]["estimator"]["distance_t"] = {0.0, 1.0};
  rejection(j.dump());
  j = good;
  j["layers"][0]["heads"][0]["estimator"].erase("pooled");
  rejection(j.dump());
  j = good;
  j["layers"][1]["layer"] = 3;  // duplicate layer
  rejection(j.dump());
}

TEST(ProfileTest, LayerLookupChecksTheCall) {
  Profile p = random_profile(std::random_device{}());
  auto found = p.layer_for(6, 3);
  ASSERT_TRUE(found);
  EXPECT_EQ((*found)->layer, 6);
  auto missing = p.layer_for(7, 3);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.status().message().find("no entry for layer 7"), std::string::npos);
  auto wrong_heads = p.layer_for(3, 12);
  ASSERT_FALSE(wrong_heads);
  EXPECT_NE(wrong_heads.status().message().find("3 heads, the attention call has 12"), std::string::npos);

  // Head densities scale with the requested overall density and keep the split.
  std::vector<double> half = p.head_densities(**found, p.density / 2);
  for (size_t h = 0; h < half.size(); ++h) EXPECT_NEAR(half[h], (*found)->heads[h].density / 2, 1e-12);
}

TEST(ProfileTest, SaveRejectsAnInvalidProfile) {
  Profile p = random_profile(std::random_device{}());
  p.layers[0].heads[0].tile = {4, 4, 2};
  EXPECT_FALSE(save_profile(test::temp_dir() + "/bad.json", p).is_ok());
}

}  // namespace
}  // namespace veda
