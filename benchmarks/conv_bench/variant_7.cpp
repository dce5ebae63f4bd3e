#define LAPIS_BENCH_VARIANT 7
#include "variants.hpp"
