// Temporary buffers a thread keeps from one call to the next.
//
// A kernel's large temporaries, freshly allocated, are fresh pages: glibc maps
// big blocks anew (or trims the heap back) so that every call pays the page
// faults again (a 2-4x slowdown measured on conv2d_backward). A slot keeps the
// largest buffer it has been asked for on its thread, until the thread ends.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastconv {

// One slot per buffer that may be live at the same time on one thread.
enum class ScratchSlot {
    backward_cols,
    backward_dcols,
    backward_grad,
    packed_grad,
    flipped_weight,
    partials,
    padded_input,
    padded_grad,
    padded_conv_input,
    packed_weights,
    count
};

// At least `bytes` bytes, 64-byte aligned, contents undefined; valid until the
// next request of the same slot on this thread.
void* scratch_bytes(ScratchSlot slot, std::size_t bytes);

template <typename T>
T* scratch(ScratchSlot slot, std::int64_t count) {
    return static_cast<T*>(scratch_bytes(slot, std::size_t(count) * sizeof(T)));
}

}  // namespace fastconv
