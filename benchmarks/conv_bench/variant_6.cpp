#define LAPIS_BENCH_VARIANT 6
#include "variants.hpp"
