// The CSR products of exporter/sparse.py after lowering: SpMV straight into the output, SpMM
// into a buffer of its own that a loop then reads.
func.func @forward(%row_ptr: memref<4xi64>, %col_idx: memref<5xi64>, %values: memref<5xf32>,
                   %x: memref<3xf32>, %B: memref<3x2xf32>, %y: memref<3xf32>,
                   %Y: memref<3x2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  "lapis.csr_matvec"(%row_ptr, %col_idx, %values, %x, %y) : (memref<4xi64>, memref<5xi64>, memref<5xf32>, memref<3xf32>, memref<3xf32>) -> () loc("csr_matvec")
  %product = memref.alloc() {alignment = 64 : i64} : memref<3x2xf32> loc("csr_matmul")
  "lapis.csr_matmul"(%row_ptr, %col_idx, %values, %B, %product) : (memref<4xi64>, memref<5xi64>, memref<5xf32>, memref<3x2xf32>, memref<3x2xf32>) -> () loc("csr_matmul")
  scf.parallel (%i, %j) = (%c0, %c0) to (%c3, %c2) step (%c1, %c1) {
    %p = memref.load %product[%i, %j] : memref<3x2xf32>
    %twice = arith.addf %p, %p : f32
    memref.store %twice, %Y[%i, %j] : memref<3x2xf32>
    scf.reduce
  } loc("add")
  return
}
