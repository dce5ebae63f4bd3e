#define LAPIS_BENCH_VARIANT 4
#include "variants.hpp"
