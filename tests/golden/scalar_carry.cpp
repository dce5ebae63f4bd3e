void forward(input0_view input0, input1_view input1, output0_view output0, output1_view output1) {
  if (!state) throw std::runtime_error("golden::forward called before golden::initialize()");
  lapis::check_extents("golden::forward: input0 (input0)", input0, input0_extents);
  lapis::check_extents("golden::forward: input1 (input1)", input1, input1_extents);
  lapis::check_extents("golden::forward: output0 (output0)", output0, output0_extents);
  lapis::check_extents("golden::forward: output1 (output1)", output1, output1_extents);
  // Local handles, so that kernels capture the Views by value.
  const auto bias_load_scalar = state->bias_load_scalar;
  const auto bias_load_scalar_1 = state->bias_load_scalar_1;

  // bias/load: sequential code, one thread
  Kokkos::parallel_for("golden::bias_load", range(0, 1), KOKKOS_LAMBDA(const int64_t) {
    const float v0 = input1();
    const float v1 = (v0 * v0);
    bias_load_scalar() = v0;
    bias_load_scalar_1() = v1;
  });
  // bias/add
  Kokkos::parallel_for("golden::bias_add", range(0, 4), KOKKOS_LAMBDA(const int64_t i0) {
    const float v1 = input0(i0);
    const float v2 = (v1 + bias_load_scalar());
    output0(i0) = v2;
  });
  // bias/scale
  Kokkos::parallel_for("golden::bias_scale", range(0, 4), KOKKOS_LAMBDA(const int64_t i0) {
    const float v1 = input0(i0);
    const float v2 = (v1 * bias_load_scalar_1());
    output1(i0) = v2;
  });
}

void forward_graph(input0_view input0, input1_view input1, output0_view output0, output1_view output1) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  state->graph.run(execution_space(), {input0.data(), input1.data(), output0.data(), output1.data()}, [&] { forward(input0, input1, output0, output1); });
}
