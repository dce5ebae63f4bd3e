#define LAPIS_BENCH_VARIANT 5
#include "variants.hpp"
