// The Chase-Lev work-stealing deque (src/work_deque.hpp): order, growth, and exactly-once takes.
#include "work_deque.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "../sanitized.hpp"

namespace quell {
namespace {

// An item remembers the round the owner pushed it in: written before push(),
// read by whoever takes it, so an earlier round's item handed out from a stale
// slot shows up, and under TSan a missing push-to-take happens-before is a
// data race.
struct Item {
  int round = -1;
};
using Deque = detail::WorkDeque<Item*>;
using Steal = Deque::Steal;

constexpr int kMixedRounds = test::kSanitized ? 150 : 600;
constexpr int kLastElementRounds = test::kSanitized ? 8'000 : 20'000;
constexpr int kGrowthRounds = test::kSanitized ? 150 : 600;
constexpr int kReuseRounds = test::kSanitized ? 150 : 600;

// --- Single-threaded semantics -------------------------------------------------------------

TEST(WorkDeque, PopReturnsTheMostRecentlyPushedItemFirst) {
  Deque deque;
  std::vector<Item> items(5);
  for (Item& item : items) deque.push(&item);
  for (int i = 4; i >= 0; --i) EXPECT_EQ(deque.pop(), &items[i]) << "item " << i;
  EXPECT_EQ(deque.pop(), nullptr);
}

TEST(WorkDeque, StealReturnsTheOldestItemFirst) {
  Deque deque;
  std::vector<Item> items(5);
  for (Item& item : items) deque.push(&item);
  for (int i = 0; i < 5; ++i) {
    const Deque::Stolen stolen = deque.steal();
    EXPECT_EQ(stolen.result, Steal::taken) << "item " << i;  // no other thread to race
    EXPECT_EQ(stolen.item, &items[i]) << "item " << i;
  }
  EXPECT_EQ(deque.steal().result, Steal::empty);
}

TEST(WorkDeque, AnEmptyDequePopsNullptrAndStealsEmptyAndStaysUsable) {
  Deque deque;
  EXPECT_EQ(deque.pop(), nullptr);
  EXPECT_EQ(deque.steal().result, Steal::empty);
  EXPECT_EQ(deque.steal().item, nullptr);
  // An empty pop() moves bottom_ down and back: a second one, and a push
  // after it, must see the deque as it was.
  EXPECT_EQ(deque.pop(), nullptr);
  Item a;
  Item b;
  deque.push(&a);
  EXPECT_EQ(deque.pop(), &a);  // the last element: won through the CAS on top_
  EXPECT_EQ(deque.pop(), nullptr);
  EXPECT_EQ(deque.steal().result, Steal::empty);
  deque.push(&b);
  const Deque::Stolen stolen = deque.steal();
  EXPECT_EQ(stolen.result, Steal::taken);
  EXPECT_EQ(stolen.item, &b);
  EXPECT_EQ(deque.pop(), nullptr);  // a steal emptied it: pop must not return b again
  EXPECT_EQ(deque.steal().result, Steal::empty);
}

TEST(WorkDeque, PopAndStealTakeFromOppositeEndsUntilTheyMeet) {
  Deque deque;
  std::vector<Item> items(4);
  for (Item& item : items) deque.push(&item);
  EXPECT_EQ(deque.steal().item, &items[0]);
  EXPECT_EQ(deque.pop(), &items[3]);
  EXPECT_EQ(deque.steal().item, &items[1]);
  EXPECT_EQ(deque.pop(), &items[2]);
  EXPECT_EQ(deque.pop(), nullptr);
  EXPECT_EQ(deque.steal().result, Steal::empty);
}

TEST(WorkDeque, GrowingPastTheInitialCapacityKeepsEveryItemInOrder) {
  constexpr int kItems = 1000;
  Deque deque(2);
  std::vector<Item> items(kItems);
  for (Item& item : items) deque.push(&item);
  // The older half by steal (FIFO), the newer half by pop (LIFO).
  for (int i = 0; i < kItems / 2; ++i) {
    const Deque::Stolen stolen = deque.steal();
    ASSERT_EQ(stolen.result, Steal::taken) << "item " << i;
    ASSERT_EQ(stolen.item, &items[i]) << "item " << i;
  }
  for (int i = kItems - 1; i >= kItems / 2; --i) ASSERT_EQ(deque.pop(), &items[i]) << "item " << i;
  EXPECT_EQ(deque.pop(), nullptr);
  EXPECT_EQ(deque.steal().result, Steal::empty);
}

TEST(WorkDeque, GrowingAfterTheIndicesWrappedKeepsEveryItemInOrder) {
  // Steals move top_ so the live range wraps around the buffer before each
  // growth: grow() must copy by index, not from slot 0.
  constexpr int kItems = 1000;
  Deque deque(2);
  std::vector<Item> items(kItems);
  int next_stolen = 0;
  for (int i = 0; i < kItems; ++i) {
    deque.push(&items[i]);
    if (i % 3 == 2) {
      const Deque::Stolen stolen = deque.steal();
      ASSERT_EQ(stolen.result, Steal::taken) << "item " << next_stolen;
      ASSERT_EQ(stolen.item, &items[next_stolen]) << "item " << next_stolen;
      ++next_stolen;
    }
  }
  for (int i = kItems - 1; i >= next_stolen; --i) ASSERT_EQ(deque.pop(), &items[i]) << "item " << i;
  EXPECT_EQ(deque.pop(), nullptr);
  EXPECT_EQ(deque.steal().result, Steal::empty);
}

// --- Concurrency ----------------------------------------------------------------------------

// Busy-waits about n steps: varies where the owner's next operation lands in
// a thief's steal(), without sleeping.
void spin(unsigned n) {
  for (volatile unsigned i = 0; i < n;) {
    i = i + 1;  // volatile: the loop is not optimised away
  }
}

// Runs rounds of: the owner (this thread) pushes and pops `items_per_round`
// items of a fresh array, while `thieves` threads steal until the owner is
// done and the deque is empty; then checks each item was taken exactly once,
// by exactly one of them, and in this round. The thieves live across rounds.
class StealRounds {
 public:
  // capacity: of a fresh deque each round if fresh_deque_each_round, else of
  // the one deque all rounds share (whose stale slots then hold items of
  // earlier rounds, which a wrong take would return).
  StealRounds(int thieves, std::size_t items_per_round, std::size_t capacity,
              bool fresh_deque_each_round)
      : items_(items_per_round),
        taken_(items_per_round),
        capacity_(capacity),
        fresh_(fresh_deque_each_round),
        deque_(std::make_unique<Deque>(capacity)) {
    for (int t = 0; t < thieves; ++t) threads_.emplace_back([this] { thief(); });
  }
  StealRounds(const StealRounds&) = delete;
  StealRounds& operator=(const StealRounds&) = delete;
  ~StealRounds() {
    start_.store(kStop, std::memory_order_release);
    for (std::thread& thread : threads_) thread.join();
  }

  // The owner's side, for the round's owner function.
  void push(std::size_t index) {
    items_[index].round = round_;
    deque_->push(&items_[index]);
    ++pushed_;
  }
  bool pop() {
    Item* item = deque_->pop();
    if (item == nullptr) return false;
    record(item);
    popped_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  void drain() {
    while (pop()) {
    }
  }

  // Runs `rounds` rounds of owner(*this, rng), which must push every item
  // once (pops optional; the round ends with drain()). Stops at the first
  // failing round.
  template <class Owner>
  void run(int rounds, Owner owner) {
    for (round_ = 0; round_ < rounds; ++round_) {
      if (fresh_) deque_ = std::make_unique<Deque>(capacity_);
      for (std::atomic<int>& count : taken_) count.store(0, std::memory_order_relaxed);
      pushed_ = 0;
      popped_.store(0, std::memory_order_relaxed);
      stolen_.store(0, std::memory_order_relaxed);
      owner_done_.store(false, std::memory_order_relaxed);
      ready_.store(0, std::memory_order_relaxed);
      finished_.store(0, std::memory_order_relaxed);
      std::minstd_rand rng(static_cast<std::uint32_t>(round_) + 1);
      start_.store(round_ + 1, std::memory_order_release);  // publishes the setup above
      // Start only once every thief is in its steal loop: with thieves woken
      // from a blocking barrier, most rounds ended before the first steal.
      await_thieves(ready_);
      owner(*this, rng);
      drain();
      owner_done_.store(true, std::memory_order_release);
      await_thieves(finished_);  // acquire: the thieves' takes are all recorded
      if (!check()) return;
    }
  }

 private:
  static constexpr int kStop = -1;

  void await_thieves(const std::atomic<int>& count) const {
    while (count.load(std::memory_order_acquire) < static_cast<int>(threads_.size())) {
      std::this_thread::yield();  // a 2-core machine runs up to 4 threads here
    }
  }

  void thief() {
    int seen = 0;
    for (;;) {
      int start;
      while ((start = start_.load(std::memory_order_acquire)) == seen) std::this_thread::yield();
      if (start == kStop) return;
      seen = start;
      ready_.fetch_add(1, std::memory_order_release);
      for (;;) {
        // Read before the steal: once the owner is done the deque is empty,
        // so an empty steal after that means nothing is left to take.
        const bool done = owner_done_.load(std::memory_order_acquire);
        const Deque::Stolen stolen = deque_->steal();
        if (stolen.result == Steal::taken) {
          record(stolen.item);
          stolen_.fetch_add(1, std::memory_order_relaxed);
        } else if (stolen.item != nullptr) {  // lost_race and empty carry no item
          foreign_.fetch_add(1, std::memory_order_relaxed);
        } else if (stolen.result == Steal::empty) {
          if (done) break;
          std::this_thread::yield();  // to the owner, if it shares this core
        }
      }
      finished_.fetch_add(1, std::memory_order_release);
    }
  }

  // By the owner or a thief: counts the take, or flags an item that is not
  // one of this round's array (nullptr, garbage, or an earlier round's).
  void record(Item* item) {
    const auto address = reinterpret_cast<std::uintptr_t>(item);
    const auto first = reinterpret_cast<std::uintptr_t>(items_.data());
    const auto end = reinterpret_cast<std::uintptr_t>(items_.data() + items_.size());
    if (address < first || address >= end || (address - first) % sizeof(Item) != 0) {
      foreign_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (item->round != round_) stale_.fetch_add(1, std::memory_order_relaxed);
    taken_[static_cast<std::size_t>(item - items_.data())].fetch_add(1, std::memory_order_relaxed);
  }

  bool check() {
    SCOPED_TRACE(testing::Message() << "round " << round_);
    EXPECT_EQ(foreign_.load(), 0) << "takes of a pointer the owner never pushed";
    EXPECT_EQ(stale_.load(), 0) << "takes of an item pushed in an earlier round";
    EXPECT_EQ(pushed_, items_.size()) << "the owner function must push every item once";
    EXPECT_EQ(popped_.load() + stolen_.load(), pushed_)
        << "popped " << popped_.load() << ", stolen " << stolen_.load();
    int reported = 0;
    for (std::size_t i = 0; i < taken_.size(); ++i) {
      const int count = taken_[i].load();
      if (count != 1 && reported++ < 5) {
        ADD_FAILURE() << "item " << i << " taken " << count << " times";
      }
    }
    return !testing::Test::HasFailure();
  }

  std::vector<Item> items_;
  std::vector<std::atomic<int>> taken_;  // per item: how many times popped or stolen
  const std::size_t capacity_;
  const bool fresh_;
  std::unique_ptr<Deque> deque_;  // replaced only while the thieves wait for start_
  int round_ = 0;                 // written only while the thieves wait for start_
  std::size_t pushed_ = 0;        // owner only
  std::atomic<int> start_{0};     // round + 1 to start it, or kStop
  std::atomic<int> ready_{0};     // thieves in this round's steal loop
  std::atomic<int> finished_{0};  // thieves done with this round
  std::atomic<bool> owner_done_{false};
  std::atomic<std::size_t> popped_{0};
  std::atomic<std::size_t> stolen_{0};
  std::atomic<long> foreign_{0};
  std::atomic<long> stale_{0};
  std::vector<std::thread> threads_;
};

TEST(WorkDeque, EveryPushedItemIsTakenExactlyOnceByTheOwnerOrAThief) {
  // Pushes with pops in between (a third of the time, in runs of up to
  // three), against 1, 2 and 3 thieves; one deque for all rounds.
  constexpr std::size_t kItems = 1000;
  for (int thieves = 1; thieves <= 3; ++thieves) {
    SCOPED_TRACE(testing::Message() << thieves << " thieves");
    StealRounds rounds(thieves, kItems, 256, /*fresh_deque_each_round=*/false);
    rounds.run(kMixedRounds, [](StealRounds& owner, std::minstd_rand& rng) {
      for (std::size_t i = 0; i < kItems; ++i) {
        owner.push(i);
        if (rng() % 3 == 0) {
          for (auto pops = rng() % 3 + 1; pops > 0; --pops) owner.pop();
        }
        if (rng() % 128 == 0) std::this_thread::yield();  // to thieves on this core
      }
    });
    if (HasFailure()) return;
  }
}

TEST(WorkDeque, TheLastItemGoesToExactlyOneOfTheOwnerAndTheThieves) {
  // The owner pushes one or two items and soon pops them, while the thieves
  // keep stealing: pop() and steal() meet on the last element (top_ ==
  // bottom_ - 1), and only the CAS on top_ may decide who gets it.
  for (int thieves = 1; thieves <= 3; ++thieves) {
    SCOPED_TRACE(testing::Message() << thieves << " thieves");
    // Two items per round; a round that pushes one pushes the other after
    // its pop, so that it too is pushed exactly once.
    StealRounds rounds(thieves, 2, 256, /*fresh_deque_each_round=*/false);
    rounds.run(kLastElementRounds / thieves, [](StealRounds& owner, std::minstd_rand& rng) {
      // A varying wait before each pop (up to a few microseconds) lands it at
      // varying points of a thief's steal() of the item; now and then a yield
      // instead, so that a thief on this core takes it whole.
      const unsigned wait = rng() % 2048;
      const bool yield = rng() % 8 == 0;
      const auto pause = [&] { yield ? std::this_thread::yield() : spin(wait); };
      if (rng() % 2 == 0) {
        owner.push(0);
        pause();
        owner.pop();
        owner.push(1);
      } else {
        owner.push(0);
        owner.push(1);
        pause();
        owner.pop();
      }
      pause();
      owner.pop();
    });
    if (HasFailure()) return;
  }
}

TEST(WorkDeque, GrowingWhileThievesStealKeepsEveryItem) {
  // A fresh deque of capacity 2 each round: the owner's pushes grow it up to
  // eight times while the thieves read the buffers it replaces (D3).
  constexpr std::size_t kItems = 512;
  for (int thieves = 1; thieves <= 3; ++thieves) {
    SCOPED_TRACE(testing::Message() << thieves << " thieves");
    StealRounds rounds(thieves, kItems, 2, /*fresh_deque_each_round=*/true);
    rounds.run(kGrowthRounds, [](StealRounds& owner, std::minstd_rand& rng) {
      for (std::size_t i = 0; i < kItems; ++i) {
        owner.push(i);
        // Pops rarely, so that the deque keeps growing.
        if (rng() % 16 == 0) owner.pop();
        if (rng() % 128 == 0) std::this_thread::yield();  // to thieves on this core
      }
    });
    if (HasFailure()) return;
  }
}

TEST(WorkDeque, ThievesNeverTakeAnItemFromASlotTheOwnerReused) {
  // At most two items live in a deque of capacity 2, so it never grows and
  // every push overwrites a slot a slow thief may have just read: its CAS on
  // top_ must fail rather than hand out the overwritten or an old item (D1).
  constexpr std::size_t kItems = 1000;
  for (int thieves = 1; thieves <= 3; ++thieves) {
    SCOPED_TRACE(testing::Message() << thieves << " thieves");
    StealRounds rounds(thieves, kItems, 2, /*fresh_deque_each_round=*/false);
    rounds.run(kReuseRounds, [](StealRounds& owner, std::minstd_rand& rng) {
      for (std::size_t i = 0; i < kItems; i += 2) {
        owner.push(i);
        owner.push(i + 1);
        if (rng() % 64 == 0) std::this_thread::yield();  // to thieves on this core
        owner.pop();
        owner.pop();
      }
    });
    if (HasFailure()) return;
  }
}

}  // namespace
}  // namespace quell
