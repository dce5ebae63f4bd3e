#define LAPIS_BENCH_VARIANT 0
#include "variants.hpp"
