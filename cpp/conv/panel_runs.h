// How conv2d's GEMM sees a block of output pixels: per micro-panel (NR pixels),
// the runs of pixels that share an input row. Built in conv2d.cpp, read by the
// packers (compiled per ISA path, direct.h).
#pragma once

#include <cstdint>

namespace fastconv {

// Output pixels of one micro-panel that share an image row: columns
// [first, first + len) of the panel read input row ih0 + kh*dh from column
// iw0 + kw*dw on, stepping by the stride.
struct PanelRun {
    int first, len;
    std::int64_t image;  // offset of the image's first channel of this group in x
    std::int64_t ih0, iw0;
};

// Panel q's runs are runs[start[q]] .. runs[start[q + 1]]; in_place[2q] >= 0
// when the micro-kernel reads the panel in place (it is not packed).
struct PanelRunsView {
    const PanelRun* runs;
    const int* start;
    const std::int64_t* in_place;
    std::int64_t panels;
};

}  // namespace fastconv
