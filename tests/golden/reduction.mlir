// Row sums with a loop-carried accumulator, a row max with -inf as its start, and an scf.if.
func.func @forward(%x: memref<3x5xf32>, %out: memref<3xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c3 = arith.constant 3 : index
  %c5 = arith.constant 5 : index
  %zero = arith.constant 0.0 : f32
  %ninf = arith.constant 0xFF800000 : f32
  scf.parallel (%i) = (%c0) to (%c3) step (%c1) {
    %sum = scf.for %k = %c0 to %c5 step %c1 iter_args(%acc = %zero) -> (f32) {
      %v = memref.load %x[%i, %k] : memref<3x5xf32>
      %n = arith.addf %acc, %v : f32
      scf.yield %n : f32
    }
    %max = scf.for %k = %c0 to %c5 step %c1 iter_args(%m = %ninf) -> (f32) {
      %v = memref.load %x[%i, %k] : memref<3x5xf32>
      %n = arith.maximumf %m, %v : f32
      scf.yield %n : f32
    }
    %pos = arith.cmpf ogt, %sum, %zero : f32
    %r = scf.if %pos -> (f32) {
      scf.yield %sum : f32
    } else {
      scf.yield %max : f32
    }
    memref.store %r, %out[%i] : memref<3xf32>
    scf.reduce
  } loc("rows/sum")
  return
}
