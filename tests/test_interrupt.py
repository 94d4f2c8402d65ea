"""Ctrl-C reaches a long call: it raises KeyboardInterrupt within a second.

Long calls run in slices of rows with a look for signals between them. The
test runs in a child process: the child times an uninterrupted call, then
sends itself SIGINT a little way into a second one, and reports how long
the KeyboardInterrupt took to arrive.
"""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import os, signal, sys, threading, time
    import numpy as np
    import csoftmax
    fn = getattr(csoftmax, sys.argv[1])
    # Ctrl-C's handler, as in an interactive Python: a process started with
    # SIGINT ignored (a background job of a non-interactive shell, which is
    # how a CI script may run) inherits the ignore, and Python then installs
    # no KeyboardInterrupt handler at all.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # 2^27 float32 elements: 512 MiB in, 512 MiB out, well over a slice.
    x = np.ones((1 << 13, 1 << 14), np.float32)
    out = np.empty_like(x)
    # A first call touches out's pages (a second or more of page faults): the
    # timed call, and so the moment of the interrupt, is a warm one like the
    # call that is interrupted.
    fn(x, out=out, num_threads=1)
    t0 = time.perf_counter()
    fn(x, out=out, num_threads=1)
    full = time.perf_counter() - t0
    def attempt():
        # ("interrupted", seconds from the signal to the KeyboardInterrupt),
        # ("missed", seconds of the call left after the signal), or None when
        # the timer's thread got the CPU too late to send it inside the call.
        sent = []
        def interrupt():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)
        timer = threading.Timer(full / 10, interrupt)
        timer.start()
        try:
            fn(x, out=out, num_threads=1)
        except KeyboardInterrupt:
            return "interrupted", time.perf_counter() - sent[0]
        end = time.perf_counter()
        try:  # a signal sent after the call lands here, outside it
            timer.cancel()
            timer.join()
            time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        # Sent with two slices (a quarter of the call) still to go: a miss.
        if sent and end - sent[0] > full / 4:
            return "missed", end - sent[0]
        return None

    # On a loaded machine (CI runs this beside other jobs) the timer's thread
    # can wake after a 0.1 s call has ended: such a try proves nothing either
    # way, and is repeated.
    for _ in range(20):
        result = attempt()
        if result is not None:
            break
    else:
        print("inconclusive: the signal never went out inside a call")
        sys.exit(3)
    kind, seconds = result
    if kind == "interrupted":
        print(f"interrupted {seconds:.4f} of {full:.4f}")
        sys.exit(0)
    print(f"not interrupted: the signal came {seconds:.4f} s before the call's end, of {full:.4f}")
    sys.exit(1)
""")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_ctrl_c_interrupts_a_long_call_quickly(fn):
    proc = subprocess.run([sys.executable, "-c", CHILD, fn], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode == 3:
        pytest.skip(f"the machine was too busy to place the signal inside a call: {proc.stdout}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, took, _, full = proc.stdout.split()
    # The call itself would take `full` seconds; the interrupt arrives after
    # at most one slice (2^24 elements), an eighth of this call.
    assert float(took) < min(1.0, 0.5 * float(full)), proc.stdout
