// Video frames from a pixel-space sample: 8-bit RGB frames, PNG and animated-GIF writing, and
// frame-quality metrics (PSNR, SSIM) between two videos.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "veda/status.hpp"
#include "veda/tensor.hpp"

namespace veda {

struct VideoFrames {
  int frames = 0, height = 0, width = 0;
  std::vector<uint8_t> rgb;  // [frames][height][width][3]
  const uint8_t* frame(int f) const { return rgb.data() + size_t(f) * height * width * 3; }
};

// A sample f32 [1, C, F, H, W] (or [C, F, H, W]) with values in [-1, 1] -> 8-bit frames
// (pixel = (v + 1) / 2 * 255, clamped). C = 3 is RGB; C = 1 is gray.
Result<VideoFrames> frames_from_sample(const Tensor& sample);

// frame_0000.png, frame_0001.png, ... in `dir` (created if needed).
Status write_png_frames(const std::string& dir, const VideoFrames& video);
// An animated, looping GIF (fixed 6x6x6 colour cube plus grays, no dithering).
Status write_gif(const std::string& path, const VideoFrames& video, double fps = 8.0);

struct VideoQuality {
  double psnr = 0;  // dB over all frames and channels (peak 255); +inf for identical videos
  double ssim = 0;  // mean SSIM over frames and channels (11x11 Gaussian window, sigma 1.5)
  std::vector<double> frame_psnr, frame_ssim;
};
Result<VideoQuality> compare_videos(const VideoFrames& test, const VideoFrames& reference);

}  // namespace veda
