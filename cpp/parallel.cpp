#include "parallel.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

namespace fastconv {

struct UnitQueue {
    explicit UnitQueue(std::int64_t n) : count(n) {}
    std::atomic<std::int64_t> next{0};
    const std::int64_t count;
};

bool claim(UnitQueue& units, std::int64_t& unit) {
    unit = units.next.fetch_add(1, std::memory_order_relaxed);
    return unit < units.count;
}

namespace {

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// A worker that finished a job polls this many times (about 50 us) for the next
// one before it sleeps: a kernel's few back-to-back regions then start at once.
// The caller polls as long for the workers still in its job's last units.
constexpr int SPIN = 1500;

struct Job {
    std::uint64_t id;
    UnitQueue* units;
    Participant participant;
    void* context;
    int seats;                     // workers that may still join
    std::atomic<int> running{0};   // workers inside participant (changed under the lock)
    std::exception_ptr error;
};

class Pool {
public:
    void run(std::int64_t count, int threads, Participant participant, void* context);

private:
    void work();

    std::mutex m_;
    std::condition_variable wake_, done_;
    Job* job_ = nullptr;                 // the open job, nullptr when none
    std::atomic<std::uint64_t> posted_{0};  // id of the latest job
    int workers_ = 0;
};

void Pool::run(std::int64_t count, int threads, Participant participant, void* context) {
    UnitQueue units(count);
    Job job{0, &units, participant, context, threads - 1};
    bool alone;  // decided under the lock: once posted, workers change job.seats
    {
        std::lock_guard<std::mutex> lock(m_);
        alone = job_ != nullptr;  // serving another call: this one runs alone
        if (!alone) {
            for (; workers_ < threads - 1; ++workers_) std::thread([this] { work(); }).detach();
            job.id = posted_.load(std::memory_order_relaxed) + 1;
            job_ = &job;
            posted_.store(job.id, std::memory_order_release);
        }
    }
    if (alone) {
        participant(context, units);
        return;
    }
    wake_.notify_all();
    try {
        participant(context, units);
    } catch (...) {
        job.error = std::current_exception();
    }
    {
        std::lock_guard<std::mutex> lock(m_);
        job_ = nullptr;  // workers that have not joined yet never will
    }
    // the workers still inside are finishing their last unit: poll a while
    // before sleeping (a sleeping caller's wake-up took longer than the unit)
    for (int i = 0; i < SPIN && job.running.load() != 0; ++i) cpu_relax();
    if (job.running.load() != 0) {
        std::unique_lock<std::mutex> lock(m_);
        done_.wait(lock, [&] { return job.running.load() == 0; });
    }
    if (job.error) std::rethrow_exception(job.error);
}

void Pool::work() {
    std::uint64_t last = 0;  // the latest job this worker has seen
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
        Job* job = job_;
        if (job != nullptr && job->id != last) {
            last = job->id;
            if (job->seats > 0) {
                --job->seats;
                ++job->running;
                lock.unlock();
                try {
                    job->participant(job->context, *job->units);
                } catch (...) {
                    lock.lock();
                    if (!job->error) job->error = std::current_exception();
                    lock.unlock();
                }
                lock.lock();
                if (--job->running == 0) done_.notify_all();
            }
            continue;
        }
        const std::uint64_t seen = posted_.load(std::memory_order_relaxed);
        lock.unlock();
        for (int i = 0; i < SPIN && posted_.load(std::memory_order_acquire) == seen; ++i)
            cpu_relax();
        lock.lock();
        wake_.wait(lock, [&] { return posted_.load(std::memory_order_relaxed) != seen; });
    }
}

Pool* pool = nullptr;
std::once_flag pool_once;

// A forked child has none of the parent's worker threads, and the mutex may be
// held by one of them: it starts a pool of its own (the old one is leaked).
void reset_in_child() { pool = new Pool(); }

}  // namespace

void run_parallel(std::int64_t units, int threads, Participant participant, void* context) {
    if (units <= 0) return;
    if (threads <= 1 || units == 1) {
        UnitQueue all(units);
        participant(context, all);
        return;
    }
    std::call_once(pool_once, [] {
        pool = new Pool();  // never destroyed: workers may sleep in it at exit
        pthread_atfork(nullptr, nullptr, reset_in_child);
    });
    pool->run(units, threads > units ? int(units) : threads, participant, context);
}

}  // namespace fastconv
