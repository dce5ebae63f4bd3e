void forward(input0_view input0, output0_view output0) {
  if (!state) throw std::runtime_error("golden::forward called before golden::initialize()");
  lapis::check_extents("golden::forward: input0 (input0)", input0, input0_extents);
  lapis::check_extents("golden::forward: output0 (output0)", output0, output0_extents);

  // rows/sum
  Kokkos::parallel_for("golden::rows_sum", range(0, 3), KOKKOS_LAMBDA(const int64_t i0) {
    float v1 = 0.0f;
    for (int64_t i2 = 0; i2 < 5; ++i2) {
      const float v3 = input0(i0, i2);
      const float v4 = (v1 + v3);
      v1 = v4;
    }
    float v5 = -lapis::infinity<float>();
    for (int64_t i6 = 0; i6 < 5; ++i6) {
      const float v7 = input0(i0, i6);
      const float v8 = lapis::maximumf(v5, v7);
      v5 = v8;
    }
    const bool v9 = (v1 > 0.0f);
    float v10;
    if (v9) {
      v10 = v1;
    } else {
      v10 = v5;
    }
    output0(i0) = v10;
  });
}

void forward_graph(input0_view input0, output0_view output0) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  state->graph.run(execution_space(), {input0.data(), output0.data()}, [&] { forward(input0, output0); });
}
