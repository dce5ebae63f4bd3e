void forward(const execution_space& exec, input0_arg input0_given, input1_arg input1_given, input2_arg input2_given, input3_arg input3_given, input4_arg input4_given, output0_arg output0_given, output1_arg output1_given) {
  if (!state) throw std::runtime_error("golden::forward called before golden::initialize()");
  lapis::check_extents("golden::forward: input0 (input0)", input0_given, input0_extents);
  lapis::check_extents("golden::forward: input1 (input1)", input1_given, input1_extents);
  lapis::check_extents("golden::forward: input2 (input2)", input2_given, input2_extents);
  lapis::check_extents("golden::forward: input3 (input3)", input3_given, input3_extents);
  lapis::check_extents("golden::forward: input4 (input4)", input4_given, input4_extents);
  lapis::check_extents("golden::forward: output0 (output0)", output0_given, output0_extents);
  lapis::check_extents("golden::forward: output1 (output1)", output1_given, output1_extents);
  // The kernels read and write row-major Views: the caller's own where its strides are
  // row-major, else a copy in a planned buffer (see the header).
  const auto input0 = lapis::row_major_input(exec, "golden::input0_staged", input0_given, state->input0_staged);
  const auto input1 = lapis::row_major_input(exec, "golden::input1_staged", input1_given, state->input1_staged);
  const auto input2 = lapis::row_major_input(exec, "golden::input2_staged", input2_given, state->input2_staged);
  const auto input3 = lapis::row_major_input(exec, "golden::input3_staged", input3_given, state->input3_staged);
  const auto input4 = lapis::row_major_input(exec, "golden::input4_staged", input4_given, state->input4_staged);
  const auto output0 = lapis::row_major_output(exec, "golden::output0_staged", output0_given, state->output0_staged);
  const auto output1 = lapis::row_major_output(exec, "golden::output1_staged", output1_given, state->output1_staged);
  // Local handles, so that kernels capture the Views by value.
  const auto csr_matmul = state->csr_matmul;

  // csr_matvec: CSR matrix-vector product (lapis/sparse.hpp)
  lapis::csr_matvec<execution_space>(exec, "golden::csr_matvec", input0, input1, input2, input3, output0);
  // csr_matmul: CSR matrix times dense matrix (lapis/sparse.hpp)
  lapis::csr_matmul<execution_space>(exec, "golden::csr_matmul", input0, input1, input2, input4, csr_matmul);
  // add
  Kokkos::parallel_for("golden::add", mdrange<2>(exec, {0, 0}, {3, 2}), KOKKOS_LAMBDA(const int64_t i0, const int64_t i1) {
    const float v2 = csr_matmul(i0, i1);
    const float v3 = (v2 + v2);
    output1(i0, i1) = v3;
  });
  lapis::write_back_output(exec, "golden::output0_write_back", output0, output0_given);
  lapis::write_back_output(exec, "golden::output1_write_back", output1, output1_given);
}

void forward(input0_arg input0, input1_arg input1, input2_arg input2, input3_arg input3, input4_arg input4, output0_arg output0, output1_arg output1) { forward(execution_space(), input0, input1, input2, input3, input4, output0, output1); }

void forward_graph(const execution_space& exec, input0_arg input0, input1_arg input1, input2_arg input2, input3_arg input3, input4_arg input4, output0_arg output0, output1_arg output1) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  state->graph.run(exec, {input0.data(), input1.data(), input2.data(), input3.data(), input4.data(), output0.data(), output1.data()}, [&] { forward(exec, input0, input1, input2, input3, input4, output0, output1); });
}

void forward_graph(input0_arg input0, input1_arg input1, input2_arg input2, input3_arg input3, input4_arg input4, output0_arg output0, output1_arg output1) { forward_graph(execution_space(), input0, input1, input2, input3, input4, output0, output1); }
