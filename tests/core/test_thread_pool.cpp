#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "veda/thread_pool.hpp"

namespace veda {
namespace {

// Runs parallel_for over [begin, end) and checks every index was visited exactly once.
void expect_each_index_once(ThreadPool& pool, int64_t begin, int64_t end, int64_t grain) {
  const int64_t span = std::max<int64_t>(0, end - begin);
  std::vector<std::atomic<int>> hits(size_t(span) + 1);
  std::atomic<int> out_of_range{0};
  pool.parallel_for(begin, end, [&](int64_t i) {
    if (i < begin || i >= end) out_of_range++;
    else hits[size_t(i - begin)]++;
  }, grain);
  EXPECT_EQ(out_of_range.load(), 0);
  for (int64_t i = 0; i < span; ++i) {
    ASSERT_EQ(hits[size_t(i)].load(), 1) << "index " << begin + i << " grain " << grain;
  }
}

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  ThreadPool pool(4);
  EXPECT_EQ(pool.size(), 4);
  for (int64_t grain : {1, 3, 7, 64, 1000}) {
    expect_each_index_once(pool, 0, 1, grain);
    expect_each_index_once(pool, 0, 997, grain);
    expect_each_index_once(pool, 13, 5000, grain);
    expect_each_index_once(pool, -50, 50, grain);
  }
}

TEST(ThreadPool, EmptyAndReversedRangesDoNothing) {
  ThreadPool pool(3);
  std::atomic<int> calls{0};
  pool.parallel_for(5, 5, [&](int64_t) { calls++; });
  pool.parallel_for(10, 2, [&](int64_t) { calls++; });
  EXPECT_EQ(calls.load(), 0);
}

TEST(ThreadPool, SingleThreadPoolRunsInline) {
  ThreadPool pool(1);
  EXPECT_EQ(pool.size(), 1);
  expect_each_index_once(pool, 0, 300, 4);
}

TEST(ThreadPool, NestedCallsCoverTheProduct) {
  ThreadPool pool(4);
  const int outer = 37, inner = 53;
  std::vector<std::atomic<int>> hits(outer * inner);
  pool.parallel_for(0, outer, [&](int64_t i) {
    pool.parallel_for(0, inner, [&](int64_t j) { hits[size_t(i * inner + j)]++; });
  });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

TEST(ThreadPool, ManyConsecutiveJobs) {
  ThreadPool pool(4);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 2000; ++rep) {
    pool.parallel_for(0, 17, [&](int64_t i) { sum += i; });
  }
  EXPECT_EQ(sum.load(), 2000 * (16 * 17 / 2));
}

// Two outside threads sharing one pool must each get all their indices.
TEST(ThreadPool, ConcurrentCallersFromOutside) {
  ThreadPool pool(3);
  std::atomic<int64_t> a{0}, b{0};
  std::thread t1([&] {
    for (int r = 0; r < 200; ++r) pool.parallel_for(0, 100, [&](int64_t i) { a += i; });
  });
  std::thread t2([&] {
    for (int r = 0; r < 200; ++r) pool.parallel_for(0, 100, [&](int64_t i) { b += i; });
  });
  t1.join();
  t2.join();
  EXPECT_EQ(a.load(), 200 * 4950);
  EXPECT_EQ(b.load(), 200 * 4950);
}

TEST(ThreadPool, GlobalPoolAndFreeFunction) {
  EXPECT_GE(ThreadPool::global().size(), 1);
  expect_each_index_once(ThreadPool::global(), 0, 4096, 16);
  std::vector<std::atomic<int>> hits(1000);
  parallel_for(0, 1000, [&](int64_t i) { hits[size_t(i)]++; }, 8);
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

TEST(ThreadPool, DestroysCleanlyWithoutWork) {
  for (int i = 0; i < 20; ++i) {
    auto pool = std::make_unique<ThreadPool>(4);
    pool.reset();
  }
}

}  // namespace
}  // namespace veda
