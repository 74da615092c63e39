// Frames, PNG (stb_image_write), a small GIF encoder (LZW), PSNR and SSIM.
#include "veda/video.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#if __has_include(<stb/stb_image_write.h>)
#define VEDA_HAVE_STB_IMAGE_WRITE 1
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop
#endif

#include "veda/thread_pool.hpp"

namespace veda {
namespace fs = std::filesystem;

Result<VideoFrames> frames_from_sample(const Tensor& sample) {
  Shape shape = sample.shape();
  if (shape.size() == 5 && shape[0] == 1) shape.erase(shape.begin());
  if (shape.size() != 4 || (shape[0] != 3 && shape[0] != 1)) {
    return invalid_argument(fmt::format("frames need a [1, C, F, H, W] sample with C = 3 or 1, "
                                        "got {}",
                                        shape_to_string(sample.shape())));
  }
  Tensor f32 = sample.to(DType::kF32);
  const float* v = f32.data_as<float>();
  VideoFrames video;
  const int channels = int(shape[0]);
  video.frames = int(shape[1]);
  video.height = int(shape[2]);
  video.width = int(shape[3]);
  const int64_t plane = int64_t(video.frames) * video.height * video.width;
  video.rgb.resize(size_t(plane) * 3);
  for (int64_t p = 0; p < plane; ++p) {
    for (int ch = 0; ch < 3; ++ch) {
      const float x = v[(channels == 3 ? ch : 0) * plane + p];
      const float pixel = std::round((x + 1.0f) * 0.5f * 255.0f);
      video.rgb[size_t(p) * 3 + ch] = uint8_t(std::clamp(pixel, 0.0f, 255.0f));
    }
  }
  return video;
}

Status write_png_frames(const std::string& dir, const VideoFrames& video) {
#ifdef VEDA_HAVE_STB_IMAGE_WRITE
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return io_error(fmt::format("{}: cannot create directory: {}", dir, ec.message()));
  for (int f = 0; f < video.frames; ++f) {
    const std::string path = fmt::format("{}/frame_{:04d}.png", dir, f);
    if (!stbi_write_png(path.c_str(), video.width, video.height, 3, video.frame(f),
                        video.width * 3)) {
      return io_error(fmt::format("{}: cannot write PNG", path));
    }
  }
  return Status::ok();
#else
  (void)dir;
  (void)video;
  return unsupported("PNG output needs stb_image_write.h (Debian package libstb-dev)");
#endif
}

namespace {

// GIF image data: LZW codes packed LSB-first into sub-blocks of at most 255 bytes.
class GifBitWriter {
 public:
  explicit GifBitWriter(std::vector<uint8_t>& out) : out_(out) {}
  void write(uint32_t code, int bits) {
    buffer_ |= code << used_;
    used_ += bits;
    while (used_ >= 8) {
      push(uint8_t(buffer_ & 0xFF));
      buffer_ >>= 8;
      used_ -= 8;
    }
  }
  void finish() {
    if (used_ > 0) push(uint8_t(buffer_ & 0xFF));
    buffer_ = 0;
    used_ = 0;
    flush_block();
    out_.push_back(0);  // block terminator
  }

 private:
  void push(uint8_t byte) {
    block_.push_back(byte);
    if (block_.size() == 255) flush_block();
  }
  void flush_block() {
    if (block_.empty()) return;
    out_.push_back(uint8_t(block_.size()));
    out_.insert(out_.end(), block_.begin(), block_.end());
    block_.clear();
  }
  std::vector<uint8_t>& out_;
  std::vector<uint8_t> block_;
  uint32_t buffer_ = 0;
  int used_ = 0;
};

// Codes for 8-bit indices: clear 256, end 257, strings from 258 up to 4095, then a reset.
void lzw_encode(const std::vector<uint8_t>& indices, std::vector<uint8_t>& out) {
  constexpr int kMinCodeSize = 8;
  constexpr uint32_t kClear = 1u << kMinCodeSize, kEnd = kClear + 1;
  out.push_back(kMinCodeSize);
  GifBitWriter writer(out);
  // next[code * 256 + byte]: the code of string(code) + byte, 0 when absent.
  std::vector<uint16_t> next(4096 * 256, 0);
  int code_size = kMinCodeSize + 1;
  uint32_t max_code = kEnd;
  writer.write(kClear, code_size);
  int64_t current = -1;
  for (uint8_t index : indices) {
    if (current < 0) {
      current = index;
      continue;
    }
    const uint16_t found = next[size_t(current) * 256 + index];
    if (found) {
      current = found;
      continue;
    }
    writer.write(uint32_t(current), code_size);
    ++max_code;
    next[size_t(current) * 256 + index] = uint16_t(max_code);
    if (max_code >= (1u << code_size)) ++code_size;
    if (max_code == 4095) {
      writer.write(kClear, code_size);
      std::fill(next.begin(), next.end(), 0);
      code_size = kMinCodeSize + 1;
      max_code = kEnd;
    }
    current = index;
  }
  if (current >= 0) writer.write(uint32_t(current), code_size);
  writer.write(kClear, code_size);
  writer.write(kEnd, kMinCodeSize + 1);
  writer.finish();
}

// Palette: 216 colours of a 6x6x6 cube, then 40 grays between the cube's gray levels.
std::vector<uint8_t> gif_palette() {
  std::vector<uint8_t> p;
  for (int r = 0; r < 6; ++r)
    for (int g = 0; g < 6; ++g)
      for (int b = 0; b < 6; ++b) {
        p.push_back(uint8_t(r * 51));
        p.push_back(uint8_t(g * 51));
        p.push_back(uint8_t(b * 51));
      }
  for (int i = 0; i < 40; ++i) {
    const uint8_t v = uint8_t((i + 1) * 255 / 41);
    p.insert(p.end(), {v, v, v});
  }
  return p;
}

uint8_t palette_index(const uint8_t* rgb, const std::vector<uint8_t>& palette) {
  auto level = [](uint8_t v) { return (int(v) + 25) / 51; };
  const int cube = level(rgb[0]) * 36 + level(rgb[1]) * 6 + level(rgb[2]);
  auto dist = [&](int i) {
    int d = 0;
    for (int ch = 0; ch < 3; ++ch) {
      const int e = int(rgb[ch]) - palette[size_t(i) * 3 + ch];
      d += e * e;
    }
    return d;
  };
  int best = cube, best_dist = dist(cube);
  // Near-gray pixels may be closer to one of the extra grays.
  if (std::abs(int(rgb[0]) - rgb[1]) < 24 && std::abs(int(rgb[1]) - rgb[2]) < 24) {
    for (int i = 216; i < 256; ++i) {
      const int d = dist(i);
      if (d < best_dist) best = i, best_dist = d;
    }
  }
  return uint8_t(best);
}

void put_u16(std::vector<uint8_t>& out, int v) {
  out.push_back(uint8_t(v & 0xFF));
  out.push_back(uint8_t((v >> 8) & 0xFF));
}

}  // namespace

Status write_gif(const std::string& path, const VideoFrames& video, double fps) {
  if (video.frames < 1 || video.width < 1 || video.height < 1 || video.width > 65535 ||
      video.height > 65535) {
    return invalid_argument("GIF: empty or oversized video");
  }
  const std::vector<uint8_t> palette = gif_palette();
  std::vector<uint8_t> out;
  const std::string header = "GIF89a";
  out.insert(out.end(), header.begin(), header.end());
  put_u16(out, video.width);
  put_u16(out, video.height);
  out.push_back(0xF7);  // global colour table of 256 entries
  out.push_back(0);     // background colour
  out.push_back(0);     // pixel aspect ratio
  out.insert(out.end(), palette.begin(), palette.end());
  // NETSCAPE2.0 application extension: loop forever.
  const uint8_t loop[] = {0x21, 0xFF, 0x0B, 'N', 'E', 'T', 'S', 'C', 'A', 'P', 'E', '2', '.', '0',
                          0x03, 0x01, 0x00, 0x00, 0x00};
  out.insert(out.end(), std::begin(loop), std::end(loop));
  const int delay_cs = std::max(2, int(std::lround(100.0 / std::max(fps, 0.1))));
  const size_t pixels = size_t(video.width) * video.height;
  std::vector<uint8_t> indices(pixels);
  for (int f = 0; f < video.frames; ++f) {
    out.insert(out.end(), {0x21, 0xF9, 0x04, 0x00});  // graphic control extension
    put_u16(out, delay_cs);
    out.insert(out.end(), {0x00, 0x00});
    out.push_back(0x2C);  // image descriptor: full frame, no local palette
    put_u16(out, 0);
    put_u16(out, 0);
    put_u16(out, video.width);
    put_u16(out, video.height);
    out.push_back(0);
    const uint8_t* rgb = video.frame(f);
    for (size_t p = 0; p < pixels; ++p) indices[p] = palette_index(rgb + p * 3, palette);
    lzw_encode(indices, out);
  }
  out.push_back(0x3B);
  std::ofstream file(path, std::ios::binary);
  if (!file) return io_error(fmt::format("{}: cannot open for writing", path));
  file.write(reinterpret_cast<const char*>(out.data()), std::streamsize(out.size()));
  if (!file) return io_error(fmt::format("{}: write failed", path));
  return Status::ok();
}

namespace {

// SSIM of one channel plane (values 0..255), mean over the valid (unpadded) window positions.
double plane_ssim(const std::vector<double>& a, const std::vector<double>& b, int h, int w) {
  constexpr int kRadius = 5;
  constexpr double kSigma = 1.5;
  double kernel[2 * kRadius + 1], total = 0;
  for (int i = -kRadius; i <= kRadius; ++i) {
    kernel[i + kRadius] = std::exp(-(i * i) / (2 * kSigma * kSigma));
    total += kernel[i + kRadius];
  }
  for (double& k : kernel) k /= total;
  // Windows shrink at the borders when the image is smaller than the window.
  const int ry = std::min(kRadius, (h - 1) / 2), rx = std::min(kRadius, (w - 1) / 2);
  auto blur = [&](const std::vector<double>& x) {
    std::vector<double> tmp(x.size(), 0), out(x.size(), 0);
    for (int y = 0; y < h; ++y)
      for (int c = rx; c < w - rx; ++c) {
        double s = 0, norm = 0;
        for (int i = -rx; i <= rx; ++i) {
          s += kernel[i + kRadius] * x[size_t(y) * w + c + i];
          norm += kernel[i + kRadius];
        }
        tmp[size_t(y) * w + c] = s / norm;
      }
    for (int y = ry; y < h - ry; ++y)
      for (int c = rx; c < w - rx; ++c) {
        double s = 0, norm = 0;
        for (int i = -ry; i <= ry; ++i) {
          s += kernel[i + kRadius] * tmp[size_t(y + i) * w + c];
          norm += kernel[i + kRadius];
        }
        out[size_t(y) * w + c] = s / norm;
      }
    return out;
  };
  std::vector<double> aa(a.size()), bb(a.size()), ab(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    aa[i] = a[i] * a[i];
    bb[i] = b[i] * b[i];
    ab[i] = a[i] * b[i];
  }
  const std::vector<double> mu_a = blur(a), mu_b = blur(b), s_aa = blur(aa), s_bb = blur(bb),
                            s_ab = blur(ab);
  const double c1 = std::pow(0.01 * 255, 2), c2 = std::pow(0.03 * 255, 2);
  double sum = 0;
  int64_t count = 0;
  for (int y = ry; y < h - ry; ++y)
    for (int c = rx; c < w - rx; ++c) {
      const size_t i = size_t(y) * w + c;
      const double va = s_aa[i] - mu_a[i] * mu_a[i], vb = s_bb[i] - mu_b[i] * mu_b[i];
      const double cov = s_ab[i] - mu_a[i] * mu_b[i];
      sum += ((2 * mu_a[i] * mu_b[i] + c1) * (2 * cov + c2)) /
             ((mu_a[i] * mu_a[i] + mu_b[i] * mu_b[i] + c1) * (va + vb + c2));
      ++count;
    }
  return count ? sum / double(count) : 1.0;
}

double psnr_from_mse(double mse) {
  return mse == 0 ? INFINITY : 10.0 * std::log10(255.0 * 255.0 / mse);
}

}  // namespace

Result<VideoQuality> compare_videos(const VideoFrames& test, const VideoFrames& reference) {
  if (test.frames != reference.frames || test.height != reference.height ||
      test.width != reference.width || test.rgb.size() != reference.rgb.size()) {
    return invalid_argument(fmt::format("videos differ in size: {}x{}x{} vs {}x{}x{}", test.frames,
                                        test.height, test.width, reference.frames,
                                        reference.height, reference.width));
  }
  VideoQuality q;
  q.frame_psnr.resize(size_t(test.frames));
  q.frame_ssim.resize(size_t(test.frames));
  const int h = test.height, w = test.width;
  const size_t pixels = size_t(h) * w;
  std::vector<double> frame_mse(size_t(test.frames));
  parallel_for(0, test.frames, [&](int64_t f) {
    const uint8_t* a = test.frame(int(f));
    const uint8_t* b = reference.frame(int(f));
    double se = 0;
    for (size_t i = 0; i < pixels * 3; ++i) {
      const double d = double(a[i]) - b[i];
      se += d * d;
    }
    frame_mse[f] = se / double(pixels * 3);
    double ssim = 0;
    for (int ch = 0; ch < 3; ++ch) {
      std::vector<double> pa(pixels), pb(pixels);
      for (size_t i = 0; i < pixels; ++i) {
        pa[i] = a[i * 3 + ch];
        pb[i] = b[i * 3 + ch];
      }
      ssim += plane_ssim(pa, pb, h, w);
    }
    q.frame_ssim[f] = ssim / 3.0;
    q.frame_psnr[f] = psnr_from_mse(frame_mse[f]);
  });
  double mse = 0, ssim = 0;
  for (int f = 0; f < test.frames; ++f) {
    mse += frame_mse[f];
    ssim += q.frame_ssim[f];
  }
  q.psnr = psnr_from_mse(mse / test.frames);
  q.ssim = ssim / test.frames;
  return q;
}

}  // namespace veda
