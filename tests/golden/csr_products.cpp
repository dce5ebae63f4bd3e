void forward(input0_view input0, input1_view input1, input2_view input2, input3_view input3, input4_view input4, output0_view output0, output1_view output1) {
  if (!state) throw std::runtime_error("golden::forward called before golden::initialize()");
  lapis::check_extents("golden::forward: input0 (input0)", input0, input0_extents);
  lapis::check_extents("golden::forward: input1 (input1)", input1, input1_extents);
  lapis::check_extents("golden::forward: input2 (input2)", input2, input2_extents);
  lapis::check_extents("golden::forward: input3 (input3)", input3, input3_extents);
  lapis::check_extents("golden::forward: input4 (input4)", input4, input4_extents);
  lapis::check_extents("golden::forward: output0 (output0)", output0, output0_extents);
  lapis::check_extents("golden::forward: output1 (output1)", output1, output1_extents);
  // Local handles, so that kernels capture the Views by value.
  const auto csr_matmul = state->csr_matmul;

  // csr_matvec: CSR matrix-vector product (lapis/sparse.hpp)
  lapis::csr_matvec<execution_space>("golden::csr_matvec", input0, input1, input2, input3, output0);
  // csr_matmul: CSR matrix times dense matrix (lapis/sparse.hpp)
  lapis::csr_matmul<execution_space>("golden::csr_matmul", input0, input1, input2, input4, csr_matmul);
  // add
  Kokkos::parallel_for("golden::add", mdrange<2>({0, 0}, {3, 2}), KOKKOS_LAMBDA(const int64_t i0, const int64_t i1) {
    const float v2 = csr_matmul(i0, i1);
    const float v3 = (v2 + v2);
    output1(i0, i1) = v3;
  });
}

void forward_graph(input0_view input0, input1_view input1, input2_view input2, input3_view input3, input4_view input4, output0_view output0, output1_view output1) {
  if (!state) throw std::runtime_error("golden::forward_graph called before golden::initialize()");
  state->graph.run(execution_space(), {input0.data(), input1.data(), input2.data(), input3.data(), input4.data(), output0.data(), output1.data()}, [&] { forward(input0, input1, input2, input3, input4, output0, output1); });
}
