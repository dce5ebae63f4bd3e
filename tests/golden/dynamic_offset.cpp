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
  const auto split_offset_scalar = state->split_offset_scalar;

  // split/offset: sequential code, one thread
  Kokkos::parallel_for("golden::split_offset", range(exec, 0, 1), KOKKOS_LAMBDA(const int64_t) {
    const int64_t v0 = input1();
    split_offset_scalar() = v0;
  });
  const unmanaged<const float*> input0_view(input0.data(), 6);
  int64_t split_offset_scalar_on_host;
  Kokkos::deep_copy(exec, split_offset_scalar_on_host, split_offset_scalar);
  exec.fence();   // read on the host next
  const int64_t size = static_cast<int64_t>(split_offset_scalar_on_host);
  const strided<const float*> input0_view_1(input0.data() + size * int64_t(input0.stride(0)), Kokkos::LayoutStride(2, int64_t(input0.stride(0))));
  // split/copy
  Kokkos::parallel_for("golden::split_copy", range(exec, 0, 2), KOKKOS_LAMBDA(const int64_t i0) {
    const float v1 = input0_view_1(i0);
    output0(i0) = v1;
  });
  lapis::write_back_output(exec, "golden::output0_write_back", output0, output0_given);
}

void forward(input0_arg input0, input1_arg input1, output0_arg output0) { forward(execution_space(), input0, input1, output0); }

void forward_graph(const execution_space& exec, input0_arg input0, input1_arg input1, output0_arg output0) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  // forward() reads sizes computed from tensor data back on the host: no graph.
  forward(exec, input0, input1, output0);
}

void forward_graph(input0_arg input0, input1_arg input1, output0_arg output0) { forward_graph(execution_space(), input0, input1, output0); }
