// fastconv's thread team: a kernel's units of work shared by the calling thread
// and the pool's workers that join in time.
//
// Why not OpenMP: at the end of a parallel region OpenMP's master waits for
// every thread of the team, also for one the OS has not run yet. On a busy
// machine that wait is a scheduler time slice (here 10-200x the work itself).
// Here the caller claims units too and waits only for workers that already
// hold one; a worker that wakes late finds the job closed and goes back to sleep.
//
// A unit's result must not depend on who runs it: kernels split work into
// independent output tiles, so results are bitwise the same for any thread count.
//
// Everything here is out of line or a template over the caller's own types, so
// the ISA-specific kernel files can use it without linking ISA code into others.
#pragma once

#include <cstdint>
#include <type_traits>

namespace fastconv {

struct UnitQueue;

// Claim the next unit: true with `unit` set, false when none is left.
bool claim(UnitQueue& units, std::int64_t& unit);

using Participant = void (*)(void* context, UnitQueue& units);

// Run participant(context, units) on the calling thread and on up to threads - 1
// pool workers; each claims units until none is left, keeping its own scratch
// state across the units it runs. Returns when every unit is done. A call made
// while the pool serves another one (another Python thread, or from inside a
// participant) runs on the calling thread alone.
void run_parallel(std::int64_t units, int threads, Participant participant, void* context);

// run_parallel with a callable: team(units, threads, [&](UnitQueue& q) {
//     Scratch s; for (std::int64_t u; claim(q, u);) work(u, s); });
template <typename F>
void team(std::int64_t units, int threads, F&& participant) {
    using Fn = std::remove_reference_t<F>;
    run_parallel(units, threads,
                 [](void* f, UnitQueue& q) { (*static_cast<Fn*>(f))(q); },
                 const_cast<void*>(static_cast<const void*>(&participant)));
}

// body(unit) for every unit, on up to `threads` threads.
template <typename Body>
void parallel_for(std::int64_t units, int threads, Body&& body) {
    team(units, threads, [&](UnitQueue& q) {
        for (std::int64_t u; claim(q, u);) body(u);
    });
}

}  // namespace fastconv
