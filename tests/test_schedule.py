"""How the engine hands out a call's blocks to its threads (csoftmax/_shares.h):
each thread takes its own contiguous share first, then steals what is left of
the others', so that every block runs exactly once whatever the team and the
timing, and a quiet call gives each thread the same blocks every time."""
import numpy as np
import pytest

import csoftmax
from csoftmax import _engine


def _shares(n_blocks, count):
    return [range(n_blocks * t // count, n_blocks * (t + 1) // count) for t in range(count)]


def _laid_out(a, layout):
    """a in C order, Fortran order, or as every 2nd row and 3rd column of a
    larger array (a copy)."""
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.full((2 * a.shape[0], 3 * a.shape[1]), np.nan, a.dtype)
        big[::2, ::3] = a
        return big[::2, ::3]
    return a.copy()


@pytest.mark.parametrize("fn", ["softmax", "softmax_backward", "softmax_cross_entropy"])
@pytest.mark.parametrize("threads", [2, 3, 8])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_every_block_of_a_parallel_call_runs(fn, threads, layout, isa):
    # An output full of NaN, written by calls of many blocks at more threads
    # than cores: every row must come out, as one thread writes it, whether
    # the blocks run the row kernels (C order) or the lane layout with its
    # per-thread scratch (Fortran order, other strides).
    rng = np.random.default_rng(threads)
    n, k = 4099, 64
    x = _laid_out(rng.standard_normal((n, k)).astype(np.float32), layout)
    unit = layout == "C"
    assert _engine.plan("softmax", n, k, unit_columns=unit, num_threads=threads)["n_blocks"] > threads
    for _ in range(5):
        if fn == "softmax_cross_entropy":
            labels = rng.integers(0, k, n)
            want = csoftmax.softmax_cross_entropy(x, labels, reduction="none", num_threads=1)
            got = csoftmax.softmax_cross_entropy(x, labels, reduction="none", num_threads=threads)
            assert np.array_equal(got, want)
            continue
        args = (_laid_out(csoftmax.softmax(x), layout), x) if fn == "softmax_backward" else (x,)
        want = getattr(csoftmax, fn)(*args, num_threads=1)
        out = _laid_out(np.full((n, k), np.nan, np.float32), layout)
        getattr(csoftmax, fn)(*args, out=out, num_threads=threads)
        assert np.array_equal(out, want)


@pytest.mark.parametrize("n_blocks, count", [(16, 2), (17, 2), (10, 3), (3, 8), (1, 1), (0, 2)])
def test_threads_taking_turns_each_take_their_own_share(n_blocks, count):
    order = [t for _ in range(n_blocks + 2) for t in range(count)]
    claims = _engine._shares_walk(n_blocks, count, order)
    taken = [(t, c) for t, c in claims if c >= 0]
    assert sorted(c for _, c in taken) == list(range(n_blocks))
    # Each thread's claims start with its own share, front to back, for as
    # long as the shortest share lasts (then a thread with a shorter share
    # steals from a longer one).
    shares = _shares(n_blocks, count)
    m = min(len(sh) for sh in shares)
    for t, share in enumerate(shares):
        assert [c for u, c in taken if u == t][:m] == list(share)[:m]
    if all(len(sh) == m for sh in shares):
        assert all([c for u, c in taken if u == t] == list(sh) for t, sh in enumerate(shares))


@pytest.mark.parametrize("n_blocks, count", [(16, 2), (17, 3), (5, 8)])
@pytest.mark.parametrize("alone", [0, 1])
def test_a_thread_alone_takes_its_share_then_steals_the_rest(n_blocks, count, alone):
    alone = alone % count
    late = [t for t in range(count) if t != alone]
    claims = _engine._shares_walk(n_blocks, count, [alone] * (n_blocks + 1) + late)
    shares = _shares(n_blocks, count)
    expect = [c for s in range(count) for c in shares[(alone + s) % count]]
    assert [c for _, c in claims[:n_blocks + 1]] == expect + [-1]
    # Everything is taken: the threads that come late find nothing.
    assert all(c == -1 for _, c in claims[n_blocks + 1:])


def test_a_late_thread_finds_only_what_is_left_of_its_share():
    # Thread 0 takes its share and steals two blocks of thread 1's; thread 1
    # then gets the rest of its own share, in order, and nothing more.
    order = [0] * 10 + [1] * 7
    claims = _engine._shares_walk(16, 2, order)
    assert [c for t, c in claims if t == 0] == list(range(10))
    assert [c for t, c in claims if t == 1] == list(range(10, 16)) + [-1]


def test_a_team_larger_than_its_shares_only_steals():
    # (The engine makes one share per requested thread; a larger team, which
    # OpenMP never gives, would still run every block once.)
    claims = _engine._shares_walk(6, 2, [5, 0, 1, 5, 5, 5, 5, 5])
    assert sorted(c for _, c in claims if c >= 0) == list(range(6))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward"])
@pytest.mark.parametrize("n, k", [(1024, 10), (256, 64), (32, 1000)])
def test_calls_in_a_loop_give_the_bits_of_one_thread(fn, n, k):
    # The reused-buffer loop that the schedule serves: the same out= call
    # again and again at two threads, each result the one-thread bits.
    rng = np.random.default_rng(n + k)
    x = rng.standard_normal((n, k)).astype(np.float32)
    g = rng.standard_normal((n, k)).astype(np.float32)
    f = getattr(csoftmax, fn)
    args = (csoftmax.softmax(x), g) if "backward" in fn else (x,)
    want = f(*args, num_threads=1)
    out = np.empty_like(x)
    for _ in range(50):
        f(*args, out=out, num_threads=2)
        assert np.array_equal(out, want)
