void forward(input0_view input0, input1_view input1, output0_view output0) {
  if (!state) throw std::runtime_error("golden::forward called before golden::initialize()");
  lapis::check_extents("golden::forward: input0 (input0)", input0, input0_extents);
  lapis::check_extents("golden::forward: input1 (input1)", input1, input1_extents);
  lapis::check_extents("golden::forward: output0 (output0)", output0, output0_extents);
  // Local handles, so that kernels capture the Views by value.
  const auto scan_carried = state->scan_carried;
  const auto scan_next = state->scan_next;

  // scan
  Kokkos::parallel_for("golden::scan", range(0, 2), KOKKOS_LAMBDA(const int64_t i0) {
    scan_carried(i0) = input0(i0);
  });
  for (int64_t step = 0; step < 3; step += 1) {
    const strided<const float*> input1_view(input1.data() + step * int64_t(input1.stride(0)), Kokkos::LayoutStride(2, int64_t(input1.stride(1))));
    // scan/add
    Kokkos::parallel_for("golden::scan_add", range(0, 2), KOKKOS_LAMBDA(const int64_t i0) {
      const float v1 = scan_carried(i0);
      const float v2 = input1_view(i0);
      const float v3 = (v1 + v2);
      scan_next(i0) = v3;
    });
    // scf.yield
    Kokkos::parallel_for("golden::copy", range(0, 2), KOKKOS_LAMBDA(const int64_t i0) {
      scan_carried(i0) = scan_next(i0);
    });
  }
  // memref.copy
  Kokkos::parallel_for("golden::copy_1", range(0, 2), KOKKOS_LAMBDA(const int64_t i0) {
    output0(i0) = scan_carried(i0);
  });
}

void forward_graph(input0_view input0, input1_view input1, output0_view output0) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  state->graph.run(execution_space(), {input0.data(), input1.data(), output0.data()}, [&] { forward(input0, input1, output0); });
}
