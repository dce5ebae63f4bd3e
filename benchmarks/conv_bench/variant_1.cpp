#define LAPIS_BENCH_VARIANT 1
#include "variants.hpp"
