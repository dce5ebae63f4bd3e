void forward(const execution_space& exec, input0_arg input0_given, output0_arg output0_given) {
  if (!state) throw std::runtime_error("golden::forward called before golden::initialize()");
  lapis::check_extents("golden::forward: input0 (input0)", input0_given, input0_extents);
  lapis::check_extents("golden::forward: output0 (output0)", output0_given, output0_extents);
  lapis::check_same_extent("golden::forward: output0 (output0)", output0_given, 0, "input0", input0_given.extent(0));
  // The kernels read and write row-major Views: the caller's own where its strides are
  // row-major, else a copy in a planned buffer (see the header).
  const auto input0 = lapis::row_major_input(exec, "golden::input0_staged", input0_given, state->input0_staged);
  const auto output0 = lapis::row_major_output(exec, "golden::output0_staged", output0_given, state->output0_staged);

  const int64_t input0_extent0 = int64_t(input0.extent(0));
  // pad [input0_extent0, 8]: in dynamic_storage_0
  lapis::grow_storage(exec, "golden::dynamic_storage_0", state->dynamic_storage_0, sizeof(float) * 8 * size_t(input0_extent0));
  const unmanaged<float**> pad(reinterpret_cast<float*>(state->dynamic_storage_0.data()), input0_extent0, 8);
  // pad/fill
  Kokkos::parallel_for("golden::pad_fill", mdrange<2>(exec, {0, 0}, {input0_extent0, 8}), KOKKOS_LAMBDA(const int64_t i0, const int64_t i1) {
    pad(i0, i1) = 0.0f;
  });
  const strided<float**> pad_view(pad.data() + 2, Kokkos::LayoutStride(input0_extent0, 8, 4, 1));
  // memref.copy
  Kokkos::parallel_for("golden::copy", mdrange<2>(exec, {0, 0}, {int64_t(input0.extent(0)), 4}), KOKKOS_LAMBDA(const int64_t i0, const int64_t i1) {
    pad_view(i0, i1) = input0(i0, i1);
  });
  const unmanaged<float***> pad_view_1(pad.data(), input0_extent0, 2, 4);
  // sum [input0_extent0, 2, 4]: in dynamic_storage_1
  lapis::grow_storage(exec, "golden::dynamic_storage_1", state->dynamic_storage_1, sizeof(float) * 8 * size_t(input0_extent0));
  const unmanaged<float***> sum(reinterpret_cast<float*>(state->dynamic_storage_1.data()), input0_extent0, 2, 4);
  // sum/add
  Kokkos::parallel_for("golden::sum_add", mdrange<3>(exec, {0, 0, 0}, {input0_extent0, 2, 4}), KOKKOS_LAMBDA(const int64_t i0, const int64_t i1, const int64_t i2) {
    const float v3 = pad_view_1(i0, i1, i2);
    const float v4 = pad_view_1(i0, 1, i2);
    const float v5 = (v3 + v4);
    sum(i0, i1, i2) = v5;
  });
  const unmanaged<float**> sum_view(sum.data(), int64_t(sum.extent(0)), 8);
  const unmanaged<float**> output0_view(output0.data(), int64_t(output0.extent(0)), 8);
  // memref.copy
  Kokkos::parallel_for("golden::copy_1", mdrange<2>(exec, {0, 0}, {int64_t(sum_view.extent(0)), 8}), KOKKOS_LAMBDA(const int64_t i0, const int64_t i1) {
    output0_view(i0, i1) = sum_view(i0, i1);
  });
  lapis::write_back_output(exec, "golden::output0_write_back", output0, output0_given);
}

void forward(input0_arg input0, output0_arg output0) { forward(execution_space(), input0, output0); }

void forward_graph(const execution_space& exec, input0_arg input0, output0_arg output0) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  state->graph.run(exec, {input0.data(), output0.data()}, [&] { forward(exec, input0, output0); });
}

void forward_graph(input0_arg input0, output0_arg output0) { forward_graph(execution_space(), input0, output0); }
