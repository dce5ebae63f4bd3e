// A subview at an offset read from tensor data (Split with its split sizes as an input): the
// offset reaches forward() through a rank-0 View, the view's pointer and stride come from
// its source View.
func.func @forward(%x: memref<6xf32>, %s: memref<i64>, %out: memref<2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %n = memref.load %s[] : memref<i64> loc("split/offset")
  %view0 = memref.subview %x[0] [6] [1] : memref<6xf32> to memref<6xf32, strided<[1]>>
  %offset = arith.index_cast %n : i64 to index
  %part = memref.subview %x[%offset] [2] [1] : memref<6xf32> to memref<2xf32, strided<[1], offset: ?>>
  scf.parallel (%i) = (%c0) to (%c2) step (%c1) {
    %v = memref.load %part[%i] : memref<2xf32, strided<[1], offset: ?>>
    memref.store %v, %out[%i] : memref<2xf32>
    scf.reduce
  } loc("split/copy")
  return
}
