// relu(x + 1) over a 2-d input: one 2-d parallel loop, constants as literals.
func.func @forward(%x: memref<4x8xf32>, %out: memref<4x8xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %c8 = arith.constant 8 : index
  %one = arith.constant 1.0 : f32
  %zero = arith.constant 0.0 : f32
  scf.parallel (%i, %j) = (%c0, %c0) to (%c4, %c8) step (%c1, %c1) {
    %a = memref.load %x[%i, %j] : memref<4x8xf32>
    %b = arith.addf %a, %one : f32
    %c = arith.cmpf ugt, %b, %zero : f32
    %d = arith.select %c, %b, %zero : f32
    memref.store %d, %out[%i, %j] : memref<4x8xf32>
    scf.reduce
  } loc("block/relu")
  return
}
