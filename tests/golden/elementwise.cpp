void forward(input0_view input0, output0_view output0) {
  if (!state) throw std::runtime_error("golden::forward called before golden::initialize()");
  lapis::check_extents("golden::forward: input0 (input0)", input0, input0_extents);
  lapis::check_extents("golden::forward: output0 (output0)", output0, output0_extents);

  // block/relu
  Kokkos::parallel_for("golden::block_relu", mdrange<2>({0, 0}, {4, 8}), KOKKOS_LAMBDA(const int64_t i0, const int64_t i1) {
    const float v2 = input0(i0, i1);
    const float v3 = (v2 + 1.0f);
    const bool v4 = !(v3 <= 0.0f);
    const float v5 = (v4 ? v3 : 0.0f);
    output0(i0, i1) = v5;
  });
}

void forward_graph(input0_view input0, output0_view output0) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  state->graph.run(execution_space(), {input0.data(), output0.data()}, [&] { forward(input0, output0); });
}
