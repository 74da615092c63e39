#include "veda/thread_pool.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace veda {

namespace {
thread_local bool tls_inside_pool_job = false;

int default_thread_count() {
  if (const char* env = std::getenv("VEDA_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}
}  // namespace

ThreadPool::ThreadPool(int threads) {
  int n = threads > 0 ? threads : default_thread_count();
  for (int i = 1; i < n; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  tls_inside_pool_job = true;
  for (;;) {
    int64_t begin;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (next_ >= job_end_) break;
      begin = next_;
      next_ = std::min(job_end_, next_ + job_grain_);
    }
    int64_t end = std::min(job_end_, begin + job_grain_);
    for (int64_t i = begin; i < end; ++i) (*job_)(i);
  }
  tls_inside_pool_job = false;
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_chunks();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_cv_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t begin, int64_t end, const std::function<void(int64_t)>& fn,
                              int64_t grain) {
  if (end <= begin) return;
  grain = std::max<int64_t>(1, grain);
  // Serial when nested (a worker waiting on its own pool would deadlock) or too small to split.
  if (tls_inside_pool_job || workers_.empty() || end - begin <= grain) {
    for (int64_t i = begin; i < end; ++i) fn(i);
    return;
  }
  std::unique_lock<std::mutex> job_lock(job_mutex_);  // one job at a time from outside
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    next_ = begin;
    job_end_ = end;
    job_grain_ = grain;
    active_ = int(workers_.size());
    ++generation_;
  }
  work_cv_.notify_all();
  run_chunks();
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return active_ == 0; });
  job_ = nullptr;
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool;
  return pool;
}

void parallel_for(int64_t begin, int64_t end, const std::function<void(int64_t)>& fn,
                  int64_t grain) {
  ThreadPool::global().parallel_for(begin, end, fn, grain);
}

}  // namespace veda
