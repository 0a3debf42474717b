// Error checks for CUDA runtime and cuBLAS calls, with file and line. Two flavours: the _RET
// forms return an ost::Error from a function that returns Status or Result<T>; the plain forms
// abort (for invariants inside code that has no error path, e.g. destructors).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "core/status.h"

#define OST_CUDA_RET(expr)                                                                  \
  do {                                                                                      \
    cudaError_t _e = (expr);                                                                \
    if (_e != cudaSuccess)                                                                  \
      return ::ost::make_error("%s:%d: %s: %s", __FILE__, __LINE__, #expr,                  \
                               cudaGetErrorString(_e));                                     \
  } while (0)

#define OST_CUBLAS_RET(expr)                                                                \
  do {                                                                                      \
    cublasStatus_t _s = (expr);                                                             \
    if (_s != CUBLAS_STATUS_SUCCESS)                                                        \
      return ::ost::make_error("%s:%d: %s: cuBLAS status %d", __FILE__, __LINE__, #expr,    \
                               int(_s));                                                    \
  } while (0)

#define OST_CUDA_CHECK(expr)                                                                \
  do {                                                                                      \
    cudaError_t _e = (expr);                                                                \
    if (_e != cudaSuccess) {                                                                \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr,                    \
                   cudaGetErrorString(_e));                                                 \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

// After a kernel launch: the launch configuration error, if any.
#define OST_LAUNCH_RET() OST_CUDA_RET(cudaGetLastError())
