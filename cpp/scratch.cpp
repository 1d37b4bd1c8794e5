#include "scratch.h"

#include <memory>
#include <new>

namespace fastconv {

namespace {

struct AlignedFree {
    void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
};

struct Buffer {
    std::unique_ptr<void, AlignedFree> memory;
    std::size_t bytes = 0;
};

}  // namespace

void* scratch_bytes(ScratchSlot slot, std::size_t bytes) {
    thread_local Buffer buffers[std::size_t(ScratchSlot::count)];
    Buffer& b = buffers[std::size_t(slot)];
    if (bytes > b.bytes) {
        b.memory.reset();  // release before allocating: the peak is the larger buffer only
        b.bytes = 0;
        b.memory.reset(::operator new(bytes, std::align_val_t(64)));
        b.bytes = bytes;
    }
    return b.memory.get();
}

}  // namespace fastconv
