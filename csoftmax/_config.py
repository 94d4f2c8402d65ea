"""show_config(): what this csoftmax build is and what it runs on."""
import json
import pprint

from . import _alloc, _engine, _openmp_env, kernels
from ._version import __version__


def _build_info():
    try:
        from . import _build_info
    except ImportError:  # a source tree that setup.py has not built
        return {}
    return dict(_build_info.BUILD)


def _gpu_info():
    from . import _gpu  # imports CuPy lazily, and never raises

    return _gpu.info()


def show_config(print_=True):
    """Print and return a dict describing this build and machine.

    Keys: version, openmp, threads (the default thread count), isa (the
    kernels in use), supported_isas, openmp_spin (the GOMP_SPINCOUNT that
    csoftmax's OpenMP runtime was loaded with, or the user's setting),
    serial_after_fork (a forked child that runs serially), busy_machine (the
    busy-machine check's state), build (compiler and flags), gpu.
    Set CSOFTMAX_ISA=baseline|avx2|avx512 to force a narrower ISA.
    """
    config = {
        "version": __version__,
        "openmp": kernels.openmp_enabled(),
        "threads": kernels.max_threads(),
        "isa": kernels.isa(),
        "supported_isas": kernels.supported_isas(),
        "openmp_spin": _openmp_env.setting(),
        "serial_after_fork": _engine.serial_after_fork(),
        "busy_machine": _engine.contention(),
        "output_cache": _alloc.output_cache(),
        "build": _build_info(),
        "gpu": _gpu_info(),
    }
    if print_:
        print("csoftmax configuration")
        pprint.pprint(config, sort_dicts=False)
    return config


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(show_config(print_=False), indent=2))
