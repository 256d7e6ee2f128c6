/* The CBLAS that the portable runtime's Caffe (make gpu-bundle) compiles against.
 *
 * Why: the runtime must carry numpy, and numpy's wheel already carries an OpenBLAS
 * (numpy.libs/libscipy_openblas64_*.so, 25 MB). Linking Caffe against that same library
 * saves shipping a second OpenBLAS (Debian's is 37 MB). That build exports the CBLAS
 * routines with 64-bit integers under prefixed names (scipy_cblas_sgemm64_, ...), so this
 * header declares the fourteen CBLAS routines Caffe 99bd997 calls with their ILP64 prototypes and
 * maps the standard names onto them (Caffe defines cblas_saxpby/daxpby itself from these).
 * Caffe's int arguments convert to int64_t at each call.
 * Only Caffe's bundle flavour (CAFFE_BUNDLE=1 in caffe_build/build_caffe.sh) uses it; the
 * default build uses the system's OpenBLAS and its own cblas.h.
 */
#ifndef SEGORCH_BUNDLE_CBLAS_H
#define SEGORCH_BUNDLE_CBLAS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int64_t segorch_blasint;

/* The enumerators' values are fixed by the CBLAS standard. */
typedef enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 } CBLAS_ORDER;
typedef enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 } CBLAS_TRANSPOSE;
typedef CBLAS_ORDER CBLAS_LAYOUT;

#define cblas_sdot scipy_cblas_sdot64_
#define cblas_ddot scipy_cblas_ddot64_
#define cblas_sasum scipy_cblas_sasum64_
#define cblas_dasum scipy_cblas_dasum64_
#define cblas_saxpy scipy_cblas_saxpy64_
#define cblas_daxpy scipy_cblas_daxpy64_
#define cblas_sscal scipy_cblas_sscal64_
#define cblas_dscal scipy_cblas_dscal64_
#define cblas_scopy scipy_cblas_scopy64_
#define cblas_dcopy scipy_cblas_dcopy64_
#define cblas_sgemv scipy_cblas_sgemv64_
#define cblas_dgemv scipy_cblas_dgemv64_
#define cblas_sgemm scipy_cblas_sgemm64_
#define cblas_dgemm scipy_cblas_dgemm64_

float cblas_sdot(segorch_blasint n, const float *x, segorch_blasint incx, const float *y, segorch_blasint incy);
double cblas_ddot(segorch_blasint n, const double *x, segorch_blasint incx, const double *y, segorch_blasint incy);
float cblas_sasum(segorch_blasint n, const float *x, segorch_blasint incx);
double cblas_dasum(segorch_blasint n, const double *x, segorch_blasint incx);
void cblas_saxpy(segorch_blasint n, float alpha, const float *x, segorch_blasint incx, float *y, segorch_blasint incy);
void cblas_daxpy(segorch_blasint n, double alpha, const double *x, segorch_blasint incx, double *y, segorch_blasint incy);
void cblas_sscal(segorch_blasint n, float alpha, float *x, segorch_blasint incx);
void cblas_dscal(segorch_blasint n, double alpha, double *x, segorch_blasint incx);
void cblas_scopy(segorch_blasint n, const float *x, segorch_blasint incx, float *y, segorch_blasint incy);
void cblas_dcopy(segorch_blasint n, const double *x, segorch_blasint incx, double *y, segorch_blasint incy);
void cblas_sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE trans, segorch_blasint m, segorch_blasint n, float alpha,
                 const float *a, segorch_blasint lda, const float *x, segorch_blasint incx, float beta, float *y,
                 segorch_blasint incy);
void cblas_dgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE trans, segorch_blasint m, segorch_blasint n, double alpha,
                 const double *a, segorch_blasint lda, const double *x, segorch_blasint incx, double beta, double *y,
                 segorch_blasint incy);
void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE transa, CBLAS_TRANSPOSE transb, segorch_blasint m,
                 segorch_blasint n, segorch_blasint k, float alpha, const float *a, segorch_blasint lda, const float *b,
                 segorch_blasint ldb, float beta, float *c, segorch_blasint ldc);
void cblas_dgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE transa, CBLAS_TRANSPOSE transb, segorch_blasint m,
                 segorch_blasint n, segorch_blasint k, double alpha, const double *a, segorch_blasint lda,
                 const double *b, segorch_blasint ldb, double beta, double *c, segorch_blasint ldc);

#ifdef __cplusplus
}
#endif

#endif /* SEGORCH_BUNDLE_CBLAS_H */
