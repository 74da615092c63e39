// A fixed pool of worker threads with a blocking parallel_for.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace veda {

class ThreadPool {
 public:
  // threads <= 0: std::thread::hardware_concurrency() (or VEDA_NUM_THREADS if set).
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }  // the calling thread works too

  // Calls fn(i) for every i in [begin, end), spread over the pool, and waits. Chunks of `grain`
  // consecutive indices go to one thread. Nested calls from inside fn run serially.
  void parallel_for(int64_t begin, int64_t end, const std::function<void(int64_t)>& fn,
                    int64_t grain = 1);

  static ThreadPool& global();

 private:
  void worker_loop();
  void run_chunks();

  std::vector<std::thread> workers_;
  std::mutex job_mutex_;  // serialises jobs submitted from different outside threads
  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t job_end_ = 0, job_grain_ = 1;
  int64_t next_ = 0;      // next index to hand out (guarded by mutex_)
  int active_ = 0;        // workers still in the current job
  uint64_t generation_ = 0;
  bool stop_ = false;
};

// parallel_for on the global pool.
void parallel_for(int64_t begin, int64_t end, const std::function<void(int64_t)>& fn,
                  int64_t grain = 1);

}  // namespace veda
