// A dense matrix product after lowering (exporter/matmul.py): straight into the output, its
// zero fill folded in; a second one adds to the first's result.
func.func @forward(%A: memref<7x13xf32>, %B: memref<13x5xf32>, %C: memref<7x5xf32>) {
  "lapis.matmul"(%A, %B, %C) {init = "zero"} : (memref<7x13xf32>, memref<13x5xf32>, memref<7x5xf32>) -> () loc("mm")
  "lapis.matmul"(%A, %B, %C) {init = "accumulate"} : (memref<7x13xf32>, memref<13x5xf32>, memref<7x5xf32>) -> () loc("addmm")
  return
}
