void forward(const execution_space& exec, input0_arg input0_given, output0_arg output0_given) {
  if (!state) throw std::runtime_error("golden::forward called before golden::initialize()");
  lapis::check_extents("golden::forward: input0 (input0)", input0_given, input0_extents);
  lapis::check_extents("golden::forward: output0 (output0)", output0_given, output0_extents);
  // The kernels read and write row-major Views: the caller's own where its strides are
  // row-major, else a copy in a planned buffer (see the header).
  const auto input0 = lapis::row_major_input(exec, "golden::input0_staged", input0_given, state->input0_staged);
  const auto output0 = lapis::row_major_output(exec, "golden::output0_staged", output0_given, state->output0_staged);

  // block/relu
  Kokkos::parallel_for("golden::block_relu", mdrange<2>(exec, {0, 0}, {4, 8}), KOKKOS_LAMBDA(const int64_t i0, const int64_t i1) {
    const float v2 = input0(i0, i1);
    const float v3 = (v2 + 1.0f);
    const bool v4 = !(v3 <= 0.0f);
    const float v5 = (v4 ? v3 : 0.0f);
    output0(i0, i1) = v5;
  });
  lapis::write_back_output(exec, "golden::output0_write_back", output0, output0_given);
}

void forward(input0_arg input0, output0_arg output0) { forward(execution_space(), input0, output0); }

void forward_graph(const execution_space& exec, input0_arg input0, output0_arg output0) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  state->graph.run(exec, {input0.data(), output0.data()}, [&] { forward(exec, input0, output0); });
}

void forward_graph(input0_arg input0, output0_arg output0) { forward_graph(execution_space(), input0, output0); }
