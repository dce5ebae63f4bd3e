#define LAPIS_BENCH_VARIANT 2
#include "variants.hpp"
