//! Single-precision matrix products through OpenBLAS's `cblas_sgemm`.
//!
//! Measured on this project's 2-core AVX-512 machines, OpenBLAS runs the
//! encoders' product shapes (a 64-output weight panel against 120 tokens,
//! 1500 audio frames against a 384 x 1536 layer) at 65-80 GFLOP/s per core,
//! where the `gemm` crate managed 22-26 (the weight-panel products now run on
//! `crate::panel_kernel` where AVX-512 exists: OpenBLAS re-packs both
//! operands on every call). OpenBLAS runs single-threaded here:
//! the callers split their products into work items on rayon's pool, and a
//! second pool of OpenBLAS threads would only compete with it.

use std::os::raw::c_int;
use std::sync::Once;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

#[link(name = "openblas")]
unsafe extern "C" {
    fn cblas_sgemm(
        layout: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn openblas_set_num_threads(threads: c_int);
}

static SINGLE_THREADED: Once = Once::new();

/// A row-major matrix operand: its first element, the distance between its
/// rows, and whether it is used transposed.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    pub ptr: *const f32,
    pub stride: usize,
    pub transposed: bool,
}

impl Operand {
    pub fn plain(ptr: *const f32, stride: usize) -> Self {
        Self {
            ptr,
            stride,
            transposed: false,
        }
    }

    pub fn transposed(ptr: *const f32, stride: usize) -> Self {
        Self {
            ptr,
            stride,
            transposed: true,
        }
    }
}

/// `C = alpha A B + beta C` with `A` `m x k`, `B` `k x n` (as used, after
/// any transposition) and `C` `m x n` with row stride `c_stride`.
///
/// # Safety
/// Every element the product reads (`m x k` of `a`, `k x n` of `b`, and `C`
/// when `beta != 0`) and writes (`m x n` of `c`) must lie inside live
/// allocations at the given strides, and no other thread may write the
/// elements of `C` meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: *mut f32,
    c_stride: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: a plain setter of OpenBLAS's global thread count.
    SINGLE_THREADED.call_once(|| unsafe { openblas_set_num_threads(1) });
    let trans = |t: bool| if t { TRANS } else { NO_TRANS };
    // Leading dimensions of zero-sized operands must still be >= 1.
    let ld = |s: usize| s.max(1) as c_int;
    // SAFETY: promised by the caller.
    unsafe {
        cblas_sgemm(
            ROW_MAJOR,
            trans(a.transposed),
            trans(b.transposed),
            m as c_int,
            n as c_int,
            k as c_int,
            alpha,
            a.ptr,
            ld(a.stride),
            b.ptr,
            ld(b.stride),
            beta,
            c,
            ld(c_stride),
        );
    }
}
