// Zero padding as bufferization writes it: a buffer, a fill, a strided subview and a copy;
// then a serial top-level store into a one-element buffer and a reshape.
func.func @forward(%x: memref<1x2x3x3xf32>, %out: memref<1x2x5x5xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c5 = arith.constant 5 : index
  %zero = arith.constant 0.0 : f32
  %padded = memref.alloc() {alignment = 64 : i64} : memref<1x2x5x5xf32> loc("conv/pad")
  scf.parallel (%c, %h, %w) = (%c0, %c0, %c0) to (%c2, %c5, %c5) step (%c1, %c1, %c1) {
    memref.store %zero, %padded[%c0, %c, %h, %w] : memref<1x2x5x5xf32>
    scf.reduce
  } loc("conv/pad")
  %inner = memref.subview %padded[0, 0, 1, 1] [1, 2, 3, 3] [1, 1, 1, 1] : memref<1x2x5x5xf32> to memref<1x2x3x3xf32, strided<[50, 25, 5, 1], offset: 6>>
  memref.copy %x, %inner : memref<1x2x3x3xf32> to memref<1x2x3x3xf32, strided<[50, 25, 5, 1], offset: 6>> loc("conv/pad")
  %flat = memref.collapse_shape %padded [[0, 1], [2, 3]] : memref<1x2x5x5xf32> into memref<2x25xf32>
  memref.store %zero, %flat[%c1, %c0] : memref<2x25xf32> loc("corner/store")
  memref.copy %padded, %out : memref<1x2x5x5xf32> to memref<1x2x5x5xf32>
  return
}
