#pragma once
// Seeded generator of realistic demo traffic for the four input streams.
//
// Deterministic: the same Options (seed included) give the same sequence of
// messages. Not thread-safe; one generator per producing thread. Each call to
// next() costs a few hundred nanoseconds and reuses the caller's strings.
//
// Besides background traffic it plants cases the example rules must find:
//  - a fraud caller fanning out to many strangers with short calls, followed by
//    its number profile (profiles stream) with the features of a fraud number;
//  - a heating fault followed by a burst of complaints from the same buildings;
//  - hotline tickets that are signed and then contacted late (or never).
#include <cstdint>
#include <memory>
#include <string>

#include "pipeline/event.h"

namespace tocsin::gen {

struct Options {
  uint64_t seed = 42;
  int64_t start_time_ms = 0;        // event time of the first message (0: now)
  double events_per_second = 1000;  // event-time rate; pacing in wall time is the caller's job
  // Share of background traffic per stream (planted cases come on top).
  double calls_share = 0.79;
  double faults_share = 0.05;
  double complaints_share = 0.15;
  double profiles_share = 0.01;  // per-number profiles of ordinary subscribers (0: no profiles at all)
  // One planted scenario of each kind every this many background events (0: none).
  int64_t plant_every = 5000;
};

// One generated message: the stream it belongs to, its partition key and JSON.
struct Message {
  Stream stream = Stream::kCalls;
  std::string key;
  std::string json;
  int64_t time_ms = 0;
};

class Generator {
 public:
  explicit Generator(const Options& options);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Fills `out` with the next message in event-time order (non-decreasing time_ms).
  void next(Message& out);

  // Counts of planted scenarios so far (tests use them to know what to expect).
  struct Planted {
    int64_t fraud_fan_out = 0;
    int64_t heating_outages = 0;
    int64_t late_tickets = 0;
    int64_t fraud_profiles = 0;  // profiles of planted fraud callers (when profiles_share > 0)
  };
  const Planted& planted() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tocsin::gen
