#define LAPIS_BENCH_VARIANT 3
#include "variants.hpp"
