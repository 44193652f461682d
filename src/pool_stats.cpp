// LatencyHistogram::percentile_ns and to_prometheus (thread_pool.hpp).
#include <algorithm>
#include <array>
#include <cinttypes>
#include <cstdio>
#include <string>
#include <string_view>

#include "quell/cancellation.hpp"
#include "quell/thread_pool.hpp"

namespace quell {

std::uint64_t LatencyHistogram::percentile_ns(double p) const noexcept {
  if (count == 0) return 0;
  p = std::clamp(p, 0.0, 1.0);
  // The rank of the p-th value, 1-based: at least the first.
  const auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(p * static_cast<double>(count) + 0.5));
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < kBuckets; ++b) {
    seen += buckets[b];
    if (seen >= rank) return std::uint64_t{2} << b;
  }
  return std::uint64_t{2} << (kBuckets - 1);  // counts raced the buckets in a live read
}

namespace {

class Writer {
 public:
  explicit Writer(std::string_view prefix) : prefix_(prefix) {}

  void head(std::string_view name, std::string_view type, std::string_view help) {
    line("# HELP ", name, " ", help);
    line("# TYPE ", name, " ", type);
  }
  void sample(std::string_view name, std::string_view labels, std::uint64_t value) {
    out_ += prefix_;
    out_ += '_';
    out_ += name;
    out_ += labels;
    out_ += ' ';
    out_ += std::to_string(value);
    out_ += '\n';
  }
  void histogram(std::string_view name, std::string_view help, const LatencyHistogram& h) {
    head(name, "histogram", help);
    const std::string bucket = std::string(name) + "_bucket";
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < LatencyHistogram::kBuckets; ++b) {
      cumulative += h.buckets[b];
      // The bucket's upper bound, 2^(b+1) ns, in seconds.
      char le[48];
      std::snprintf(le, sizeof le, "{le=\"%.9g\"}", static_cast<double>(std::uint64_t{2} << b) * 1e-9);
      sample(bucket, le, cumulative);
    }
    sample(bucket, "{le=\"+Inf\"}", h.count);
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.9f", static_cast<double>(h.sum_ns) * 1e-9);
    out_ += prefix_;
    out_ += '_';
    out_ += name;
    out_ += "_sum ";
    out_ += sum;
    out_ += '\n';
    sample(std::string(name) + "_count", "", h.count);
  }
  std::string take() { return std::move(out_); }

 private:
  void line(std::string_view a, std::string_view name, std::string_view b, std::string_view c) {
    out_ += a;
    out_ += prefix_;
    out_ += '_';
    out_ += name;
    out_ += b;
    out_ += c;
    out_ += '\n';
  }

  std::string_view prefix_;
  std::string out_;
};

}  // namespace

std::string to_prometheus(const ThreadPoolStats& stats, std::string_view prefix) {
  Writer w(prefix);
  w.head("tasks_total", "counter", "Tasks that reached an outcome, by outcome.");
  w.sample("tasks_total", "{status=\"completed\"}", stats.completed);
  w.sample("tasks_total", "{status=\"failed\"}", stats.failed);
  w.sample("tasks_total", "{status=\"cancelled\"}", stats.cancelled);
  w.sample("tasks_total", "{status=\"timed_out\"}", stats.timed_out);
  w.sample("tasks_total", "{status=\"rejected\"}", stats.rejected);
  w.head("tasks_ended_by_reason_total", "counter",
         "Tasks that ended cancelled or timed out, by the reason of their cancellation.");
  for (const CancelReason reason : {CancelReason::requested, CancelReason::deadline,
                                    CancelReason::shutdown, CancelReason::failure}) {
    w.sample("tasks_ended_by_reason_total", std::string("{reason=\"") + to_string(reason) + "\"}",
             stats.ended_by_reason[static_cast<std::size_t>(reason)]);
  }
  w.head("tasks_stolen_total", "counter", "Tasks a worker took from another worker's deque.");
  w.sample("tasks_stolen_total", "", stats.stolen);
  w.head("tasks_queued", "gauge", "Tasks accepted and neither started nor resolved.");
  w.sample("tasks_queued", "", stats.queued);
  w.head("tasks_running", "gauge", "Tasks started and not yet ended, suspended coroutines included.");
  w.sample("tasks_running", "", stats.running);
  w.head("tasks_suspended", "gauge", "Coroutine tasks parked at a co_await.");
  w.sample("tasks_suspended", "", stats.suspended);
  w.histogram("queue_wait_seconds",
              "Time from submission (or due time) to start, one task in 64 per submitting thread.",
              stats.queue_wait);
  w.histogram("run_time_seconds", "Time from start to end, one task in 64 per submitting thread.",
              stats.run_time);
  w.histogram("cancel_reaction_seconds",
              "Time from a running task's cancellation to its end: how promptly tasks notice.",
              stats.cancel_reaction);
  return w.take();
}

}  // namespace quell
