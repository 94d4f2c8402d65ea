/*
 * The operations of csoftmax, declared once.
 *
 * CSM_OPS(X) calls X(name, NAME, arity, out, gpu, cost) for each operation, in the
 * order of its op code. Everything that names an operation comes from this
 * list: the op codes (CSM_OP_<NAME>), the name table the Python side reads
 * (csm_op_names, csoftmax._engine.OP_NAMES), each instruction set's table of
 * row kernels (_rows_isa.h: the kernel of op `name` is csm_<name>_rows), and
 * the GPU's kernel choice (csoftmax._gpu reads `gpu`). cuda/softmax.cu keeps
 * its own enum, because NVRTC compiles it without includes; setup.py fails
 * the build when the two disagree.
 *
 *   name   the operation's name: its Python function and its kernels' stem
 *   NAME   the same in capitals, for the op code
 *   arity  1: (x); 2: (y, grad), the backward passes
 *   out    CSM_OUT_ROWS: shaped like the input; CSM_OUT_BLOCKS: a K x K
 *          block per row (the Jacobian); CSM_OUT_REDUCE: one value per row
 *          (logsumexp); CSM_OUT_LOSS: a loss with a signature of its own
 *          (softmax_cross_entropy: csm_xent_rows, _loss.h), so it has no
 *          entry (0) in the row-kernel tables
 *   gpu    CSM_GPU_ROWS: a row kernel of softmax.cu (template argument OP =
 *          the op code); CSM_GPU_JACOBIAN: its Jacobian kernel; CSM_GPU_NONE
 *   cost   what an element of the op's work weighs against the engine's
 *          parallel grain (_engine.pyx, PARALLEL_GRAIN): 3 where each input
 *          element takes an exp or a log, 2 where it takes a few additions
 *          (the backward pass of softmax, the Jacobian's fill)
 *
 * Every operation but the test ops takes a mask (where=): its masked row is
 * a case of csm_masked_row (_masked_impl.h).
 *
 * Adding an operation: a line here, its row kernel in _rows_impl.h (and the
 * lane path in csm_strided_rows if it takes strided rows), its masked row in
 * _masked_impl.h, its CUDA kernel,
 * its public function (_entry.pyx, _semantics.py), its Cython entry point
 * (kernels.pyx/.pxd), and its tests.
 */
#ifndef CSOFTMAX_OPS_H
#define CSOFTMAX_OPS_H

enum { CSM_OUT_ROWS = 0, CSM_OUT_BLOCKS = 1, CSM_OUT_REDUCE = 2, CSM_OUT_LOSS = 3 };
enum { CSM_GPU_NONE = 0, CSM_GPU_ROWS = 1, CSM_GPU_JACOBIAN = 2 };

#define CSM_OPS(X)                                                                         \
    X(softmax,               SOFTMAX,               1, CSM_OUT_ROWS,   CSM_GPU_ROWS,     3) \
    X(log_softmax,           LOG_SOFTMAX,           1, CSM_OUT_ROWS,   CSM_GPU_ROWS,     3) \
    X(softmax_backward,      SOFTMAX_BACKWARD,      2, CSM_OUT_ROWS,   CSM_GPU_ROWS,     2) \
    X(log_softmax_backward,  LOG_SOFTMAX_BACKWARD,  2, CSM_OUT_ROWS,   CSM_GPU_ROWS,     3) \
    X(softmax_jacobian,      SOFTMAX_JACOBIAN,      1, CSM_OUT_BLOCKS, CSM_GPU_JACOBIAN, 2) \
    X(logsumexp,             LOGSUMEXP,             1, CSM_OUT_REDUCE, CSM_GPU_ROWS,     3) \
    X(softmax_cross_entropy, SOFTMAX_CROSS_ENTROPY, 2, CSM_OUT_LOSS,   CSM_GPU_NONE,     3) \
    /* The vectorised exp and log alone, for the accuracy tests; exp_neg is                 \
       the softmax domain's exp (x <= 0), in registers where the ISA has a                  \
       register form of it. */                                                              \
    X(exp,                   EXP,                   1, CSM_OUT_ROWS,   CSM_GPU_NONE,     3) \
    X(log,                   LOG,                   1, CSM_OUT_ROWS,   CSM_GPU_NONE,     3) \
    X(exp_neg,               EXP_NEG,               1, CSM_OUT_ROWS,   CSM_GPU_NONE,     3)

#define CSM_OP_CODE_(name, NAME, arity, out, gpu, cost) CSM_OP_##NAME,
enum { CSM_OPS(CSM_OP_CODE_) CSM_N_OPS };
#undef CSM_OP_CODE_

#define CSM_OP_FIELD_NAME_(name, NAME, arity, out, gpu, cost) #name,
#define CSM_OP_FIELD_ARITY_(name, NAME, arity, out, gpu, cost) arity,
#define CSM_OP_FIELD_OUT_(name, NAME, arity, out, gpu, cost) out,
#define CSM_OP_FIELD_GPU_(name, NAME, arity, out, gpu, cost) gpu,
#define CSM_OP_FIELD_COST_(name, NAME, arity, out, gpu, cost) cost,
static const char *const csm_op_names[CSM_N_OPS] = {CSM_OPS(CSM_OP_FIELD_NAME_)};
static const int csm_op_arity[CSM_N_OPS] = {CSM_OPS(CSM_OP_FIELD_ARITY_)};
static const int csm_op_out[CSM_N_OPS] = {CSM_OPS(CSM_OP_FIELD_OUT_)};
static const int csm_op_gpu[CSM_N_OPS] = {CSM_OPS(CSM_OP_FIELD_GPU_)};
static const int csm_op_cost[CSM_N_OPS] = {CSM_OPS(CSM_OP_FIELD_COST_)};
#undef CSM_OP_FIELD_NAME_
#undef CSM_OP_FIELD_ARITY_
#undef CSM_OP_FIELD_OUT_
#undef CSM_OP_FIELD_GPU_
#undef CSM_OP_FIELD_COST_

#endif /* CSOFTMAX_OPS_H */
