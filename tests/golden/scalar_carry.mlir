// A scalar loaded once at the top level (a one-thread kernel) and read by two later kernels:
// it reaches them through a rank-0 View, not through the first kernel's local.
func.func @forward(%x: memref<4xf32>, %s: memref<f32>, %out: memref<4xf32>, %out2: memref<4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %b = memref.load %s[] : memref<f32> loc("bias/load")
  %b2 = arith.mulf %b, %b : f32
  scf.parallel (%i) = (%c0) to (%c4) step (%c1) {
    %v = memref.load %x[%i] : memref<4xf32>
    %n = arith.addf %v, %b : f32
    memref.store %n, %out[%i] : memref<4xf32>
    scf.reduce
  } loc("bias/add")
  scf.parallel (%i) = (%c0) to (%c4) step (%c1) {
    %v = memref.load %x[%i] : memref<4xf32>
    %n = arith.mulf %v, %b2 : f32
    memref.store %n, %out2[%i] : memref<4xf32>
    scf.reduce
  } loc("bias/scale")
  return
}
