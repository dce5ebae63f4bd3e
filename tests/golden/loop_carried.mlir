// A recurrence (Scan, RNN time steps): a top-level loop carrying a buffer from one step to
// the next, each step reading row %t of the input through a rank-reducing subview at a
// run-time offset. The carried buffer is a State View the yield refills.
func.func @forward(%init: memref<2xf32>, %x: memref<3x2xf32>, %out: memref<2xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %last = scf.for %t = %c0 to %c3 step %c1 iter_args(%state = %init) -> (memref<2xf32>) {
    %row = memref.subview %x[%t, 0] [1, 2] [1, 1] : memref<3x2xf32> to memref<2xf32, strided<[1], offset: ?>>
    %next = memref.alloc() : memref<2xf32> loc("scan/next")
    scf.parallel (%i) = (%c0) to (%c2) step (%c1) {
      %a = memref.load %state[%i] : memref<2xf32>
      %b = memref.load %row[%i] : memref<2xf32, strided<[1], offset: ?>>
      %s = arith.addf %a, %b : f32
      memref.store %s, %next[%i] : memref<2xf32>
      scf.reduce
    } loc("scan/add")
    scf.yield %next : memref<2xf32>
  } loc("scan")
  memref.copy %last, %out : memref<2xf32> to memref<2xf32>
  return
}
