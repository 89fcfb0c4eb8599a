//! The product of a run of tokens with one weight panel, as a
//! register-blocked kernel for AVX-512 and, on machines without it, AVX2
//! with FMA.
//!
//! The encoders keep each layer's weight as panels of `PANEL` outputs laid
//! out `[inputs, PANEL]`: that is already the packed form a BLAS kernel
//! streams its right-hand side in. `cblas_sgemm` cannot be told so and
//! re-packed both operands on every call, a fifth of an embedding batch's
//! time at these sizes (15-120 tokens against a 64-wide panel). Here six
//! tokens at a time keep their 6 x 64 outputs in 24 vector registers while
//! each panel row is loaded once for the six, and each token's input is
//! broadcast straight from its row.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Outputs per weight panel: four 16-lane vectors.
pub(crate) const PANEL: usize = 64;

/// Tokens per register block: 6 x 4 accumulators leave 8 of the 32 vector
/// registers for the panel row and the broadcasts.
const BLOCK: usize = 6;

/// Inputs per pass over a panel: a `DEPTH x PANEL` slice of the weights
/// (32 KiB) stays in the first-level cache while every token block of the
/// run reads it.
const DEPTH: usize = 128;

/// f32 values whose first element starts a cache line, so that the
/// kernel's 64-byte loads of a panel row never straddle two lines (glibc
/// hands large allocations out 16 bytes past a page boundary).
pub(crate) struct Aligned {
    data: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    pub const fn new() -> Self {
        Self {
            data: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    pub fn zeroed(len: usize) -> Self {
        const LINE: usize = 64 / std::mem::size_of::<f32>();
        let data = vec![0f32; len + LINE];
        let start = data.as_ptr().align_offset(64).min(LINE);
        Self { data, start, len }
    }
}

impl std::ops::Deref for Aligned {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.data[self.start..self.start + self.len]
    }
}

/// The instruction sets the kernel is written for, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// 6 tokens x 64 outputs in 24 of the 32 zmm registers.
    Avx512,
    /// AVX2 and FMA (machines without AVX-512, such as AMD Zen 3): 16 ymm
    /// registers hold 6 tokens x 16 outputs, so a panel is four strips.
    Avx2,
}

impl Isa {
    /// The best one this machine runs.
    pub(crate) fn detect() -> Option<Self> {
        [Self::Avx512, Self::Avx2]
            .into_iter()
            .find(|isa| isa.supported())
    }

    pub(crate) fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Self::Avx512 => is_x86_feature_detected!("avx512f"),
                Self::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// Whether `accumulate` can run here.
pub(crate) fn available() -> bool {
    Isa::detect().is_some()
}

/// Where a product's sums start.
#[derive(Clone, Copy)]
pub(crate) enum Start {
    /// From what `out` holds (the product accumulates onto it).
    Out,
    /// From `bias[c]` (`outputs` values), plus `residual[t][c]` (rows
    /// `out_stride` apart) when that is not null. Read by the kernel as it
    /// starts a block rather than written to `out` beforehand: a pass of
    /// its own over the output stalled on store misses, 6 % of an
    /// embedding batch.
    Bias {
        bias: *const f32,
        residual: *const f32,
    },
}

/// `out[t][c] = start[t][c] + sum_i x[t][i] * panel[i][c]` for
/// `t < tokens`, `c < outputs`, with `x` rows `x_stride` apart, `out` rows
/// `out_stride` apart, and `panel` `inputs x PANEL` row-major (columns past
/// `outputs` are read but never written), on the best kernel this machine
/// runs.
///
/// # Safety
/// `available()` must be true; `x` must hold `tokens` rows of `inputs`
/// values at `x_stride`, `panel` `inputs * PANEL` values, `out` `tokens`
/// rows of `outputs` values at `out_stride` that no other thread touches
/// meanwhile, and `start`'s pointers `outputs` values (the residual
/// `tokens` rows of them at `out_stride`).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn accumulate(
    x: *const f32,
    x_stride: usize,
    inputs: usize,
    panel: *const f32,
    out: *mut f32,
    out_stride: usize,
    tokens: usize,
    outputs: usize,
    start: Start,
) {
    let Some(isa) = Isa::detect() else {
        return;
    };
    // SAFETY: the caller's bounds; `isa` runs here.
    unsafe {
        accumulate_on(
            isa, x, x_stride, inputs, panel, out, out_stride, tokens, outputs, start,
        )
    }
}

/// [`accumulate`] on a chosen instruction set.
///
/// # Safety
/// As [`accumulate`], with `isa.supported()`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_on(
    isa: Isa,
    x: *const f32,
    x_stride: usize,
    inputs: usize,
    panel: *const f32,
    out: *mut f32,
    out_stride: usize,
    tokens: usize,
    outputs: usize,
    start: Start,
) {
    let masks: [__mmask16; 4] = std::array::from_fn(|v| {
        let lanes = outputs.saturating_sub(v * 16).min(16);
        ((1u32 << lanes) - 1) as __mmask16
    });
    let mut depth = 0;
    while depth < inputs {
        let span = DEPTH.min(inputs - depth);
        let mut first = 0;
        // Only the first pass starts from the bias; later ones add to what
        // the earlier wrote.
        let from = if depth == 0 { start } else { Start::Out };
        // `from` for the token block starting at `first` (its residual rows).
        let at = |first: usize| match from {
            Start::Bias { bias, residual } if !residual.is_null() => Start::Bias {
                bias,
                residual: residual.wrapping_add(first * out_stride),
            },
            other => other,
        };
        let weights = panel.wrapping_add(depth * PANEL);
        while first < tokens {
            let rows = BLOCK.min(tokens - first);
            let (x, out) = (
                x.wrapping_add(first * x_stride + depth),
                out.wrapping_add(first * out_stride),
            );
            let from = at(first);
            // SAFETY: every pointer stays inside the rows the caller
            // vouched for: tokens first..first+rows, inputs
            // depth..depth+span; `isa` runs here.
            unsafe {
                match isa {
                    Isa::Avx512 => match rows {
                        6 => block::<6>(x, x_stride, span, weights, out, out_stride, &masks, from),
                        5 => block::<5>(x, x_stride, span, weights, out, out_stride, &masks, from),
                        4 => block::<4>(x, x_stride, span, weights, out, out_stride, &masks, from),
                        3 => block::<3>(x, x_stride, span, weights, out, out_stride, &masks, from),
                        2 => block::<2>(x, x_stride, span, weights, out, out_stride, &masks, from),
                        _ => block::<1>(x, x_stride, span, weights, out, out_stride, &masks, from),
                    },
                    Isa::Avx2 => match rows {
                        6 => {
                            strips::<6>(x, x_stride, span, weights, out, out_stride, outputs, from)
                        }
                        5 => {
                            strips::<5>(x, x_stride, span, weights, out, out_stride, outputs, from)
                        }
                        4 => {
                            strips::<4>(x, x_stride, span, weights, out, out_stride, outputs, from)
                        }
                        3 => {
                            strips::<3>(x, x_stride, span, weights, out, out_stride, outputs, from)
                        }
                        2 => {
                            strips::<2>(x, x_stride, span, weights, out, out_stride, outputs, from)
                        }
                        _ => {
                            strips::<1>(x, x_stride, span, weights, out, out_stride, outputs, from)
                        }
                    },
                }
            }
            first += rows;
        }
        depth += span;
    }
}

/// `ROWS` tokens against `span` panel rows, from `start` into `out`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn block<const ROWS: usize>(
    x: *const f32,
    x_stride: usize,
    span: usize,
    weights: *const f32,
    out: *mut f32,
    out_stride: usize,
    masks: &[__mmask16; 4],
    start: Start,
) {
    // SAFETY: the caller's bounds (see `accumulate`). Pointers move with
    // `wrapping_add` and loads go through intrinsics: in builds with debug
    // assertions (the tests', the dev profile's) `add` and plain
    // dereferences carry precondition checks that made this loop several
    // times slower.
    const ALL: __mmask16 = 0xFFFF;
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 4]; ROWS];
        for (r, row) in acc.iter_mut().enumerate() {
            let out = out.wrapping_add(r * out_stride);
            for (v, a) in row.iter_mut().enumerate() {
                *a = match start {
                    Start::Out => _mm512_maskz_loadu_ps(masks[v], out.wrapping_add(v * 16)),
                    Start::Bias { bias, residual } => {
                        let b = _mm512_maskz_loadu_ps(masks[v], bias.wrapping_add(v * 16));
                        if residual.is_null() {
                            b
                        } else {
                            let res = residual.wrapping_add(r * out_stride + v * 16);
                            _mm512_add_ps(b, _mm512_maskz_loadu_ps(masks[v], res))
                        }
                    }
                };
            }
        }
        let mut rows: [*const f32; ROWS] = std::array::from_fn(|r| x.wrapping_add(r * x_stride));
        let mut w = weights;
        for _ in 0..span {
            // Masked loads with every lane on: `_mm512_loadu_ps` is a
            // `read_unaligned`, checked and copied through the stack in
            // builds with debug assertions.
            let panel_row = [
                _mm512_maskz_loadu_ps(ALL, w),
                _mm512_maskz_loadu_ps(ALL, w.wrapping_add(16)),
                _mm512_maskz_loadu_ps(ALL, w.wrapping_add(32)),
                _mm512_maskz_loadu_ps(ALL, w.wrapping_add(48)),
            ];
            for (sums, x) in acc.iter_mut().zip(rows.iter_mut()) {
                let xi = _mm512_set1_ps(_mm_cvtss_f32(_mm_load_ss(*x)));
                for (a, w) in sums.iter_mut().zip(&panel_row) {
                    *a = _mm512_fmadd_ps(xi, *w, *a);
                }
                *x = x.wrapping_add(1);
            }
            w = w.wrapping_add(PANEL);
        }
        for (r, row) in acc.iter().enumerate() {
            let out = out.wrapping_add(r * out_stride);
            for (v, a) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(out.wrapping_add(v * 16), masks[v], *a);
            }
        }
    }
}

/// `ROWS` tokens against `span` panel rows on AVX2: each 16-output strip
/// of the panel (two 8-lane vectors) is a pass of its own over the block's
/// inputs, which the first-level cache serves again.
#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn strips<const ROWS: usize>(
    x: *const f32,
    x_stride: usize,
    span: usize,
    weights: *const f32,
    out: *mut f32,
    out_stride: usize,
    outputs: usize,
    start: Start,
) {
    // SAFETY: the caller's bounds (see `accumulate`); loads and stores go
    // through masked intrinsics for the reason `block` gives.
    unsafe {
        let every = _mm256_set1_epi32(-1);
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for strip in (0..PANEL).step_by(16) {
            if strip >= outputs {
                break;
            }
            // Lane j of vector v is written when strip + 8v + j < outputs.
            let masks: [__m256i; 2] = std::array::from_fn(|v| {
                let lanes = outputs.saturating_sub(strip + v * 8).min(8) as i32;
                _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), lane)
            });
            let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
            for (r, row) in acc.iter_mut().enumerate() {
                let out = out.wrapping_add(r * out_stride + strip);
                for (v, a) in row.iter_mut().enumerate() {
                    *a = match start {
                        Start::Out => _mm256_maskload_ps(out.wrapping_add(v * 8), masks[v]),
                        Start::Bias { bias, residual } => {
                            let b = _mm256_maskload_ps(bias.wrapping_add(strip + v * 8), masks[v]);
                            if residual.is_null() {
                                b
                            } else {
                                let res = residual.wrapping_add(r * out_stride + strip + v * 8);
                                _mm256_add_ps(b, _mm256_maskload_ps(res, masks[v]))
                            }
                        }
                    };
                }
            }
            let mut rows: [*const f32; ROWS] =
                std::array::from_fn(|r| x.wrapping_add(r * x_stride));
            let mut w = weights.wrapping_add(strip);
            for _ in 0..span {
                let panel_row = [
                    _mm256_maskload_ps(w, every),
                    _mm256_maskload_ps(w.wrapping_add(8), every),
                ];
                for (sums, x) in acc.iter_mut().zip(rows.iter_mut()) {
                    let xi = _mm256_set1_ps(_mm_cvtss_f32(_mm_load_ss(*x)));
                    for (a, w) in sums.iter_mut().zip(&panel_row) {
                        *a = _mm256_fmadd_ps(xi, *w, *a);
                    }
                    *x = x.wrapping_add(1);
                }
                w = w.wrapping_add(PANEL);
            }
            for (r, row) in acc.iter().enumerate() {
                let out = out.wrapping_add(r * out_stride + strip);
                for (v, a) in row.iter().enumerate() {
                    _mm256_maskstore_ps(out.wrapping_add(v * 8), masks[v], *a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_product_for_every_block_remainder_and_partial_panel() {
        for isa in [Isa::Avx512, Isa::Avx2] {
            if isa.supported() {
                matches_a_direct_product_on(isa);
            }
        }
    }

    fn matches_a_direct_product_on(isa: Isa) {
        let inputs = 300; // more than two DEPTH passes, not a multiple
        for tokens in [1, 5, 6, 7, 13] {
            for outputs in [64, 40, 3] {
                let x_stride = inputs + 3;
                let out_stride = outputs + 5;
                let x: Vec<f32> = (0..tokens * x_stride)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                    .collect();
                let panel: Vec<f32> = (0..inputs * PANEL)
                    .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                    .collect();
                let start: Vec<f32> = (0..tokens * out_stride).map(|i| i as f32 * 0.01).collect();
                let mut out = start.clone();
                // SAFETY: the buffers above have exactly the promised sizes.
                unsafe {
                    accumulate_on(
                        isa,
                        x.as_ptr(),
                        x_stride,
                        inputs,
                        panel.as_ptr(),
                        out.as_mut_ptr(),
                        out_stride,
                        tokens,
                        outputs,
                        Start::Out,
                    );
                }
                // The same sums started from a bias and a residual, `out`
                // holding garbage: bias[c] + residual[t][c] is `start`.
                let bias: Vec<f32> = (0..outputs).map(|c| c as f32 * 0.5 - 3.0).collect();
                let residual: Vec<f32> = (0..tokens * out_stride)
                    .map(|i| start[i] - bias.get(i % out_stride).copied().unwrap_or(0.0))
                    .collect();
                let mut fused: Vec<f32> = vec![f32::NAN; tokens * out_stride];
                // SAFETY: as above; `bias` holds `outputs` values and
                // `residual` `tokens` rows at `out_stride`.
                unsafe {
                    accumulate_on(
                        isa,
                        x.as_ptr(),
                        x_stride,
                        inputs,
                        panel.as_ptr(),
                        fused.as_mut_ptr(),
                        out_stride,
                        tokens,
                        outputs,
                        Start::Bias {
                            bias: bias.as_ptr(),
                            residual: residual.as_ptr(),
                        },
                    );
                }
                for t in 0..tokens {
                    for c in 0..outputs {
                        let (got, want) = (fused[t * out_stride + c], out[t * out_stride + c]);
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{isa:?} fused start, tokens {tokens} outputs {outputs} [{t}][{c}]: {got} vs {want}"
                        );
                    }
                }
                for t in 0..tokens {
                    for c in 0..out_stride {
                        let got = out[t * out_stride + c];
                        let want = if c < outputs {
                            start[t * out_stride + c]
                                + (0..inputs)
                                    .map(|i| x[t * x_stride + i] * panel[i * PANEL + c])
                                    .sum::<f32>()
                        } else {
                            start[t * out_stride + c]
                        };
                        assert!(
                            (got - want).abs() < 1e-3,
                            "{isa:?} tokens {tokens} outputs {outputs} [{t}][{c}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
