"""The cases and the speed targets that bench_targets.py measures and checks.

Each case is one op at one shape and dtype; bench_targets.py times it at every
requested thread count. The targets are issue 14's numeric goals, each a
bound on a ratio (csoftmax / a limit, or fastest peer / csoftmax) or on an
absolute time, checked per ISA and thread count.
"""
F32, F64 = "float32", "float64"
LARGE_ROW = (8, 1 << 20)  # 8 rows of 2^20 float32: 32 MiB, rows larger than L2


def case_id(op, shape, dtype):
    return f"{op} {shape[0]}x{shape[1]} {dtype}"


def _cases(op, shape, dtypes, *tags, rotate=False):
    return [{"id": case_id(op, shape, dt), "op": op, "shape": list(shape), "dtype": dt,
             "tags": list(tags), "rotate": rotate} for dt in dtypes]


# rotate=True: the case's arrays are meant to live in DRAM (a training batch,
# rows above L2), so every implementation and every limit cycles through
# copies of the inputs (and preallocated outputs) that together exceed the
# last-level cache. The Jacobian's output is compared with a fill of the
# same size that stays in cache when it fits (issue 14: "an output that fits
# in L3 should stay in it"), and the small cases are in-cache by intent.
CASES = (
    # Tiny calls: the per-call cost, allocating, through a closure.
    _cases("softmax", (1, 10), [F32], "tiny", "quick", "smoke")
    + _cases("softmax", (64, 10), [F32], "tiny", "smoke")
    + _cases("log_softmax", (64, 10), [F32], "tiny")
    # The backward family.
    + _cases("softmax_backward", (1024, 10), [F32], "backward", "quick")
    + _cases("softmax_backward", (4096, 128), [F32], "backward")
    + _cases("softmax_backward", (100000, 64), [F32], "backward", "large", rotate=True)
    + _cases("softmax_backward", (16384, 1000), [F32, F64], "backward", "large", rotate=True)
    + _cases("log_softmax_backward", (1024, 10), [F32], "backward")
    + _cases("log_softmax_backward", (100000, 64), [F32], "backward", "large", rotate=True)
    + _cases("log_softmax_backward", (16384, 1000), [F32, F64], "backward", "large", rotate=True)
    # Forward: the in-cache row cost, the compute-bound mid sizes, large rows.
    + _cases("softmax", (4096, 128), [F32], "incache", "quick")
    + _cases("softmax", (4096, 128), [F64], "incache")
    + _cases("softmax", (100000, 64), [F32, F64], "mid", rotate=True)
    + _cases("softmax", (16384, 1000), [F32, F64], "large", rotate=True)
    + _cases("softmax", LARGE_ROW, [F32], "large", "quick", rotate=True)
    + _cases("log_softmax", (4096, 128), [F32], "incache")
    + _cases("log_softmax", (100000, 64), [F32], "mid", rotate=True)
    + _cases("log_softmax", (16384, 1000), [F32, F64], "large", rotate=True)
    + _cases("log_softmax", LARGE_ROW, [F32], "large", rotate=True)
    + _cases("logsumexp", (4096, 128), [F32], "incache", "quick")
    + _cases("logsumexp", (100000, 64), [F32], "mid", rotate=True)
    + _cases("logsumexp", (16384, 1000), [F32, F64], "large", rotate=True)
    # The Jacobian against a fill of its (N, K, K) output.
    + _cases("jacobian", (64, 10), [F32], "tiny")
    + _cases("jacobian", (1000, 100), [F32], "jacobian", "quick")
    + _cases("jacobian", (1000, 100), [F64], "jacobian")
    + _cases("jacobian", (10000, 32), [F32], "jacobian")
)


def select(tokens, quick):
    """The cases whose op, tag or id matches one of the tokens (all, or the
    'quick' ones, when there are none)."""
    if not tokens:
        return [c for c in CASES if not quick or "quick" in c["tags"]]
    out = []
    for c in CASES:
        keys = {c["op"], c["id"], c["dtype"], *c["tags"]}
        if any(t in keys for t in tokens):
            out.append(c)
    return out


# Which limit a case's ratio column is measured against, by op.
PRIMARY_LIMIT = {
    "softmax": "copy", "log_softmax": "copy", "logsumexp": "np.exp",
    "softmax_backward": "add", "log_softmax_backward": "add", "jacobian": "fill",
}
# The limits each op is shown next to (all measured in the same run).
LIMITS_FOR = {
    "softmax": ("copy", "add", "fill", "np.exp"),
    "log_softmax": ("copy", "add", "fill", "np.exp"),
    "logsumexp": ("copy", "np.exp"),
    "softmax_backward": ("add", "copy", "fill", "np.exp"),
    "log_softmax_backward": ("add", "copy", "fill", "np.exp"),
    "jacobian": ("fill", "fill≠0", "empty+fill", "np.exp"),
}
# np.empty + fill timed in each csoftmax worker (bench_targets.own_limit_impls):
# the allocating-call target's reference, shown beside the call.
OWN_EMPTY_FILL = "empty+fill, own process"
LIMIT_TEXT = {
    "copy": "copy of the input (np.copyto; 2T: numba prange halves)",
    "add": "3-array pass c = a + b (np.add out=; 2T: numba prange halves)",
    "fill": "fill of the output (ndarray.fill; 2T: numba prange halves)",
    "fill≠0": "fill of the output with 1.0, the same two methods: a fill of zeros may be faster than any "
              "data can be written (2T: numba's fill of 0.0 is memset, whose streaming stores of zero lines "
              "a 2-core AMD Zen 4 VM wrote 1.2-3x faster than lines of ones); the Jacobian's output is not zeros",
    "empty+fill": "np.empty + fill of the output (what an allocating call must at least do)",
    OWN_EMPTY_FILL: "np.empty + fill timed in csoftmax's own worker process, whose allocator "
                    "state the allocating call shares (2T: two Python threads on halves)",
    "np.exp": "np.exp(x, out=) of the same array (2T: two Python threads on halves)",
}

BACKWARD_LARGE = [case_id(op, s, dt) for op in ("softmax_backward", "log_softmax_backward")
                  for s, dts in (((16384, 1000), (F32, F64)), ((100000, 64), (F32,))) for dt in dts]

# Each target: kind "limit" (csoftmax variant / limit <= bound), "peer"
# (fastest peer / best csoftmax >= bound) or "abs" (csoftmax variant <= bound
# seconds); thresholds may differ by thread count.
TARGETS = [
    {"id": "backward-limit", "text": "backward family ≤ 1.2× the 3-array pass at large shapes (out=)",
     "kind": "limit", "variant": "out", "limit": "add", "bound": {1: 1.2, 2: 1.2}, "cases": BACKWARD_LARGE},
    {"id": "backward-fastest", "text": "backward family ahead of every peer at every shape",
     "kind": "peer", "bound": {1: 1.0, 2: 1.0}, "cases": "tag:backward"},
    {"id": "incache-exp", "text": "in-cache softmax row (4096×128 f32) ≤ np.exp of the same array (out=)",
     "kind": "limit", "variant": "out", "limit": "np.exp", "bound": {1: 1.0, 2: 1.0},
     "cases": [case_id("softmax", (4096, 128), F32)]},
    {"id": "mid-2x", "text": "softmax 4096×128 and 100000×64 f32 ≥ 2× the fastest peer",
     "kind": "peer", "bound": {1: 2.0, 2: 2.0},
     "cases": [case_id("softmax", (4096, 128), F32), case_id("softmax", (100000, 64), F32)]},
    {"id": "large-copy", "text": "softmax/log_softmax f32 ≥ 32 MB within 1.6× copy (1T), 1.3× (2T) (out=)",
     "kind": "limit", "variant": "out", "limit": "copy", "bound": {1: 1.6, 2: 1.3},
     "cases": [case_id(op, s, F32) for op in ("softmax", "log_softmax") for s in ((16384, 1000), LARGE_ROW)]},
    {"id": "jacobian-fill", "text": "jacobian out= within 1.2× fill (1T, 2T)",
     "kind": "limit", "variant": "out", "limit": "fill", "bound": {1: 1.2, 2: 1.2},
     "cases": [case_id("jacobian", s, F32) for s in ((1000, 100), (10000, 32))]},
    {"id": "jacobian-alloc", "text": "jacobian allocating within 1.3× np.empty + fill",
     "kind": "limit", "variant": "alloc", "limit": OWN_EMPTY_FILL, "bound": {1: 1.3, 2: 1.3},
     "cases": [case_id("jacobian", s, F32) for s in ((1000, 100), (10000, 32))]},
    {"id": "tiny-1x10", "text": "softmax 1×10 f32 allocating ≤ 0.7 µs",
     "kind": "abs", "variant": "alloc", "bound": {1: 0.7e-6, 2: 0.7e-6},
     "cases": [case_id("softmax", (1, 10), F32)]},
    {"id": "tiny-64x10", "text": "softmax 64×10 f32 allocating ≤ 1.3 µs",
     "kind": "abs", "variant": "alloc", "bound": {1: 1.3e-6, 2: 1.3e-6},
     "cases": [case_id("softmax", (64, 10), F32)]},
]


def target_cases(target):
    if target["cases"] == "tag:backward":
        return [c["id"] for c in CASES if "backward" in c["tags"]]
    return list(target["cases"])
