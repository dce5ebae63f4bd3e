void forward(const execution_space& exec, input0_arg input0_given, input1_arg input1_given, output0_arg output0_given) {
  if (!state) throw std::runtime_error("golden::forward called before golden::initialize()");
  lapis::check_extents("golden::forward: input0 (input0)", input0_given, input0_extents);
  lapis::check_extents("golden::forward: input1 (input1)", input1_given, input1_extents);
  lapis::check_extents("golden::forward: output0 (output0)", output0_given, output0_extents);
  // The kernels read and write row-major Views: the caller's own where its strides are
  // row-major, else a copy in a planned buffer (see the header).
  const auto input0 = lapis::row_major_input(exec, "golden::input0_staged", input0_given, state->input0_staged);
  const auto input1 = lapis::row_major_input(exec, "golden::input1_staged", input1_given, state->input1_staged);
  const auto output0 = lapis::row_major_output(exec, "golden::output0_staged", output0_given, state->output0_staged);
  // Local handles, so that kernels capture the Views by value.
  const auto scan_carried = state->scan_carried;
  const auto scan_next = state->scan_next;

  // scan
  Kokkos::parallel_for("golden::scan", range(exec, 0, 2), KOKKOS_LAMBDA(const int64_t i0) {
    scan_carried(i0) = input0(i0);
  });
  for (int64_t step = 0; step < 3; step += 1) {
    const strided<const float*> input1_view(input1.data() + step * int64_t(input1.stride(0)), Kokkos::LayoutStride(2, int64_t(input1.stride(1))));
    // scan/add
    Kokkos::parallel_for("golden::scan_add", range(exec, 0, 2), KOKKOS_LAMBDA(const int64_t i0) {
      const float v1 = scan_carried(i0);
      const float v2 = input1_view(i0);
      const float v3 = (v1 + v2);
      scan_next(i0) = v3;
    });
    // scf.yield
    Kokkos::parallel_for("golden::copy", range(exec, 0, 2), KOKKOS_LAMBDA(const int64_t i0) {
      scan_carried(i0) = scan_next(i0);
    });
  }
  // memref.copy
  Kokkos::parallel_for("golden::copy_1", range(exec, 0, 2), KOKKOS_LAMBDA(const int64_t i0) {
    output0(i0) = scan_carried(i0);
  });
  lapis::write_back_output(exec, "golden::output0_write_back", output0, output0_given);
}

void forward(input0_arg input0, input1_arg input1, output0_arg output0) { forward(execution_space(), input0, input1, output0); }

void forward_graph(const execution_space& exec, input0_arg input0, input1_arg input1, output0_arg output0) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  state->graph.run(exec, {input0.data(), input1.data(), output0.data()}, [&] { forward(exec, input0, input1, output0); });
}

void forward_graph(input0_arg input0, input1_arg input1, output0_arg output0) { forward_graph(execution_space(), input0, input1, output0); }
