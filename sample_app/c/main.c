/* c_host: a C program calling an exported model through its C API, for any model with one
   float32 input and one float32 output. The C API initializes Kokkos itself.

     c_host --input in.bin --output out.bin [--steps N]

   Files are raw little-endian float32 in the model's row-major order (NAME.h gives the sizes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include LAPIS_MODEL_C_HEADER

#define LAPIS_CAT2(a, b) a##b
#define LAPIS_CAT(a, b) LAPIS_CAT2(a, b)
#define MODEL(suffix) LAPIS_CAT(LAPIS_MODEL, suffix)
#define LAPIS_STR2(x) #x
#define LAPIS_STR(x) LAPIS_STR2(x)

static int fail(const char* what) {
  fprintf(stderr, "c_host: %s failed: %s\n", what, MODEL(_last_error)());
  return 1;
}

int main(int argc, char** argv) {
  const char *input = NULL, *output = NULL;
  long steps = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--input")) input = argv[i + 1];
    else if (!strcmp(argv[i], "--output")) output = argv[i + 1];
    else if (!strcmp(argv[i], "--steps")) steps = strtol(argv[i + 1], NULL, 10);
  }
  if (!input || !output || steps < 1) {
    fprintf(stderr, "usage: %s --input in.bin --output out.bin [--steps N]\n", argv[0]);
    return 2;
  }

  const size_t in_count = (size_t)MODEL(_input0_size), out_count = (size_t)MODEL(_output0_size);
  float* x = malloc(in_count * sizeof(float));
  float* y = malloc(out_count * sizeof(float));
  FILE* file = fopen(input, "rb");
  if (!x || !y || !file) {
    fprintf(stderr, "c_host: cannot read %s\n", input);
    return 1;
  }
  const size_t got = fread(x, sizeof(float), in_count, file);
  const int extra = fgetc(file) != EOF;
  fclose(file);
  if (got != in_count || extra) {
    fprintf(stderr, "c_host: %s does not hold the %zu float32 values of input0\n", input,
            in_count);
    return 1;
  }

  if (MODEL(_initialize)()) return fail("initialize");
  for (long step = 0; step < steps; ++step)
    if (MODEL(_forward_host)(x, y)) return fail("forward_host");
  if (MODEL(_finalize)()) return fail("finalize");

  file = fopen(output, "wb");
  if (!file || fwrite(y, sizeof(float), out_count, file) != out_count || fclose(file)) {
    fprintf(stderr, "c_host: cannot write %s\n", output);
    return 1;
  }
  printf("c_host: %s ran %ld step(s), %zu outputs\n", LAPIS_STR(LAPIS_MODEL), steps, out_count);
  free(x);
  free(y);
  return 0;
}
