// A reduction as linalg lowers it: the output cell is read and written each iteration; it
// is kept in a register for the loop and stored once.
func.func @forward(%x: memref<3x5xf32>, %out: memref<3xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c3 = arith.constant 3 : index
  %c5 = arith.constant 5 : index
  scf.parallel (%i) = (%c0) to (%c3) step (%c1) {
    scf.for %k = %c0 to %c5 step %c1 {
      %v = memref.load %x[%i, %k] : memref<3x5xf32>
      %a = memref.load %out[%i] : memref<3xf32>
      %n = arith.addf %a, %v : f32
      memref.store %n, %out[%i] : memref<3xf32>
    }
    scf.reduce
  } loc("rows/sum")
  return
}
