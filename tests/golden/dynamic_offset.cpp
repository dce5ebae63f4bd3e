void forward(input0_view input0, input1_view input1, output0_view output0) {
  if (!state) throw std::runtime_error("golden::forward called before golden::initialize()");
  lapis::check_extents("golden::forward: input0 (input0)", input0, input0_extents);
  lapis::check_extents("golden::forward: input1 (input1)", input1, input1_extents);
  lapis::check_extents("golden::forward: output0 (output0)", output0, output0_extents);
  // Local handles, so that kernels capture the Views by value.
  const auto split_offset_scalar = state->split_offset_scalar;

  // split/offset: sequential code, one thread
  Kokkos::parallel_for("golden::split_offset", range(0, 1), KOKKOS_LAMBDA(const int64_t) {
    const int64_t v0 = input1();
    split_offset_scalar() = v0;
  });
  const unmanaged<const float*> input0_view(input0.data(), 6);
  int64_t split_offset_scalar_on_host;
  Kokkos::deep_copy(split_offset_scalar_on_host, split_offset_scalar);
  const int64_t size = static_cast<int64_t>(split_offset_scalar_on_host);
  const strided<const float*> input0_view_1(input0.data() + size * int64_t(input0.stride(0)), Kokkos::LayoutStride(2, int64_t(input0.stride(0))));
  // split/copy
  Kokkos::parallel_for("golden::split_copy", range(0, 2), KOKKOS_LAMBDA(const int64_t i0) {
    const float v1 = input0_view_1(i0);
    output0(i0) = v1;
  });
}

void forward_graph(input0_view input0, input1_view input1, output0_view output0) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  // forward() reads sizes computed from tensor data back on the host: no graph.
  forward(input0, input1, output0);
}
