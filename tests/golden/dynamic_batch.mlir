// A batch of any size: memref.dim reads it from the input View, buffers sized by it are
// (re)allocated by forward() when it changes, and views over them take it as their extent.
func.func @forward(%x: memref<?x4xf32>, %out: memref<?x2x4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c4 = arith.constant 4 : index
  %c8 = arith.constant 8 : index
  %cst = arith.constant 0.000000e+00 : f32
  %n = memref.dim %x, %c0 : memref<?x4xf32>
  %pad = memref.alloc(%n) {alignment = 64 : i64} : memref<?x8xf32> loc("pad")
  scf.parallel (%i, %j) = (%c0, %c0) to (%n, %c8) step (%c1, %c1) {
    memref.store %cst, %pad[%i, %j] : memref<?x8xf32>
    scf.reduce
  } loc("pad/fill")
  %inner = memref.subview %pad[0, 2] [%n, 4] [1, 1] : memref<?x8xf32> to memref<?x4xf32, strided<[8, 1], offset: 2>>
  memref.copy %x, %inner : memref<?x4xf32> to memref<?x4xf32, strided<[8, 1], offset: 2>>
  %pairs = memref.expand_shape %pad [[0], [1, 2]] output_shape [%n, 2, 4] : memref<?x8xf32> into memref<?x2x4xf32>
  %sum = memref.alloc(%n) {alignment = 64 : i64} : memref<?x2x4xf32> loc("sum")
  scf.parallel (%i, %h, %j) = (%c0, %c0, %c0) to (%n, %c2, %c4) step (%c1, %c1, %c1) {
    %a = memref.load %pairs[%i, %h, %j] : memref<?x2x4xf32>
    %b = memref.load %pairs[%i, %c1, %j] : memref<?x2x4xf32>
    %s = arith.addf %a, %b : f32
    memref.store %s, %sum[%i, %h, %j] : memref<?x2x4xf32>
    scf.reduce
  } loc("sum/add")
  %flat = memref.collapse_shape %sum [[0], [1, 2]] : memref<?x2x4xf32> into memref<?x8xf32>
  %flat_out = memref.collapse_shape %out [[0], [1, 2]] : memref<?x2x4xf32> into memref<?x8xf32>
  memref.copy %flat, %flat_out : memref<?x8xf32> to memref<?x8xf32>
  return
}
