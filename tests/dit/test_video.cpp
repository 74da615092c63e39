// Frames from samples, GIF/PNG writing, PSNR/SSIM.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "common/test_data.hpp"
#include "veda/video.hpp"

namespace veda {
namespace {

VideoFrames random_video(int frames, int h, int w, uint64_t seed) {
  Tensor sample = test::random_tensor(DType::kF32, {1, 3, frames, h, w}, seed, 0.5f);
  return frames_from_sample(sample).value();
}

TEST(Video, PixelMapping) {
  Tensor sample = Tensor::empty(DType::kF32, {1, 3, 1, 1, 2});
  float* v = sample.data_as<float>();
  // Channel-major: r = (-1, 1), g = (0, 2), b = (-3, 0.5).
  const float values[] = {-1, 1, 0, 2, -3, 0.5f};
  std::copy(values, values + 6, v);
  VideoFrames video = frames_from_sample(sample).value();
  ASSERT_EQ(video.rgb.size(), 6u);
  EXPECT_EQ(video.rgb[0], 0);    // pixel 0 r
  EXPECT_EQ(video.rgb[1], 128);  // pixel 0 g: 127.5 rounds up
  EXPECT_EQ(video.rgb[2], 0);    // pixel 0 b clamped
  EXPECT_EQ(video.rgb[3], 255);  // pixel 1 r
  EXPECT_EQ(video.rgb[4], 255);  // pixel 1 g clamped
  EXPECT_EQ(video.rgb[5], 191);  // pixel 1 b: 191.25
  EXPECT_FALSE(frames_from_sample(Tensor::zeros(DType::kF32, {1, 4, 1, 2, 2})).is_ok());
}

TEST(Video, WritesGifAndPngs) {
  // 80x96 pixels: enough for the LZW dictionary to fill and reset within a frame.
  VideoFrames video = random_video(3, 80, 96, 1);
  const std::string dir = test::temp_dir();
  ASSERT_TRUE(write_gif(dir + "/v.gif", video).is_ok());
  std::ifstream gif(dir + "/v.gif", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(gif)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 800u);
  EXPECT_EQ(bytes.substr(0, 6), "GIF89a");
  EXPECT_EQ(uint8_t(bytes.back()), 0x3B);
  Status png = write_png_frames(dir + "/frames", video);
  if (png.code() == ErrorCode::kUnsupported) GTEST_SKIP() << png.message();
  ASSERT_TRUE(png.is_ok()) << png.to_string();
  for (int f = 0; f < 3; ++f) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/frames/frame_000" + std::to_string(f) + ".png"));
  }
}

TEST(Video, PsnrAndSsim) {
  VideoFrames a = random_video(2, 24, 32, 1);
  VideoQuality same = compare_videos(a, a).value();
  EXPECT_TRUE(std::isinf(same.psnr));
  EXPECT_NEAR(same.ssim, 1.0, 1e-9);

  VideoFrames noisy = a;
  for (size_t i = 0; i < noisy.rgb.size(); i += 7) noisy.rgb[i] = uint8_t(noisy.rgb[i] ^ 0x10);
  VideoQuality q = compare_videos(noisy, a).value();
  EXPECT_GT(q.psnr, 20.0);
  EXPECT_LT(q.ssim, 1.0);
  EXPECT_GT(q.ssim, 0.5);

  VideoQuality unrelated = compare_videos(random_video(2, 24, 32, 2), a).value();
  EXPECT_LT(unrelated.psnr, q.psnr);
  EXPECT_LT(unrelated.ssim, q.ssim);
  EXPECT_FALSE(compare_videos(random_video(1, 24, 32, 2), a).is_ok());
}

}  // namespace
}  // namespace veda
