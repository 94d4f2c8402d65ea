"""csoftmax in processes forked after the parent ran a parallel kernel.

A child forked from a process whose OpenMP runtime has started its thread pool
inherits the pool's state but not its threads; the next parallel region in the
child must not wait for threads that do not exist (libgomp hangs there). The
kernels run such a child serially. These are the ways a user meets it: a plain
os.fork(), a multiprocessing Pool and a ProcessPoolExecutor with the "fork"
start method (the default on Linux before Python 3.14), e.g. in data loaders.

Each case runs a small script in its own process group with a timeout, so a
hang fails the test instead of hanging pytest; on a timeout the whole group
(the script and anything it forked) is killed. The scripts also keep their own,
shorter deadline where they wait for a child, and kill it, so that the failure
message says which step hung.
"""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

TIMEOUT_S = 60     # per case; a case normally takes 1 to 3 s
DEADLINE_S = 40    # inside the script: how long it waits for its children

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

PRELUDE = textwrap.dedent(f"""
    import os, sys, time
    import numpy as np
    import csoftmax

    DEADLINE_S = {DEADLINE_S}

    def ref(x):
        x = np.asarray(x, dtype=np.float64)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def check(x, num_threads):
        y = csoftmax.softmax(x, num_threads=num_threads)
        rtol = 1e-12 if x.dtype == np.float64 else 2e-6
        np.testing.assert_allclose(y, ref(x), rtol=rtol, atol=0)
        return y

    def work(seed):
        # Both the default thread count and an explicit parallel request.
        x = np.random.default_rng(seed).random((2000, 1000))
        a = check(x, None)
        b = check(x, 2)
        check(x.astype(np.float32), 2)
        assert np.array_equal(a, b)
        return seed

    # The parent runs a parallel kernel: OpenMP starts its thread pool.
    X = np.random.default_rng(0).random((2000, 1000))
    Y = check(X, 2)
""")


def run_script(body):
    script = PRELUDE + textwrap.dedent(body)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {TIMEOUT_S} s (a hang after fork):\n{out[-4000:]}")
    finally:
        try:  # anything the script forked and left behind
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{out[-4000:]}"
    assert "OK" in out, out[-4000:]
    return out


def test_os_fork_child_computes_softmax_after_parent_ran_parallel():
    run_script("""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                work(1)
                code = 0
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                sys.exit(f"the forked child hung for {DEADLINE_S} s in csoftmax.softmax")
            time.sleep(0.05)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"
        print("OK")
    """)


def test_multiprocessing_fork_pool_runs_softmax():
    run_script("""
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(2) as pool:
            try:
                seeds = pool.map_async(work, range(1, 5)).get(timeout=DEADLINE_S)
            except multiprocessing.TimeoutError:
                pool.terminate()
                sys.exit(f"Pool(2).map hung for {DEADLINE_S} s in csoftmax.softmax")
        assert seeds == [1, 2, 3, 4], seeds
        print("OK")
    """)


def test_process_pool_executor_with_fork_runs_softmax():
    run_script("""
        import concurrent.futures, multiprocessing
        ex = concurrent.futures.ProcessPoolExecutor(
            max_workers=2, mp_context=multiprocessing.get_context("fork"))
        try:
            seeds = list(ex.map(work, range(1, 5), timeout=DEADLINE_S))
        except concurrent.futures.TimeoutError:
            for p in list(getattr(ex, "_processes", {}).values()):
                p.kill()
            print(f"ProcessPoolExecutor.map hung for {DEADLINE_S} s in csoftmax.softmax",
                  flush=True)
            os._exit(1)
        ex.shutdown()
        assert seeds == [1, 2, 3, 4], seeds
        print("OK")
    """)


def test_parent_still_runs_in_parallel_after_forking():
    # The child exits at once; the parent then runs parallel kernels again, with
    # results bitwise equal to its own before the fork (the result does not
    # depend on the thread count). With OpenMP, its thread pool is still (or
    # again) there: /proc shows more than one thread.
    run_script("""
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        for _ in range(3):
            assert np.array_equal(csoftmax.softmax(X, num_threads=2), Y)
        assert np.array_equal(csoftmax.softmax(X), Y)
        work(2)
        if csoftmax.kernels.openmp_enabled() and os.path.exists("/proc/self/status"):
            csoftmax.softmax(X, num_threads=2)
            with open("/proc/self/status") as f:
                threads = int(next(l for l in f if l.startswith("Threads:")).split()[1])
            assert threads >= 2, f"the parent runs on {threads} thread(s) after the fork"
        print("OK")
    """)
