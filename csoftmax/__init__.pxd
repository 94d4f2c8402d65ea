# Makes `csoftmax` a Cython package, so `from csoftmax.kernels cimport ...` works.
