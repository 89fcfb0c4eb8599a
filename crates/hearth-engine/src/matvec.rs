//! Hidden states against every row of a large table (the tied output
//! projection of the decoders: Whisper's 52k x 384 embeddings, Marian's
//! 32k x 256), one dot product per row, rows split across threads.
//! candle's matmul for a single row against such a table ran at a few
//! GFLOP/s (through a transposed view or not), and this product, which
//! reads every weight of the largest matrix at every decoding step,
//! dominated decoding.

use candle_core::{Result, Tensor};

/// `x` `[.., d]` against `table` `[rows, d]`: `[.., rows]`.
pub fn against_rows(x: &Tensor, table: &Tensor) -> Result<Tensor> {
    let (rows, d) = table.dims2()?;
    let mut shape = x.dims().to_vec();
    if d == 0 || shape.last() != Some(&d) {
        return Err(candle_core::Error::Msg(format!(
            "hidden size {:?} does not match the table's {d}",
            shape.last()
        )));
    }
    let hidden: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let table = table.contiguous()?;
    let (storage, layout) = table.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Err(candle_core::Error::Msg("decoding runs on the CPU".into()));
    };
    let all = cpu.as_slice::<f32>()?;
    let weights = &all[layout.start_offset()..layout.start_offset() + rows * d];
    let out = rows_dot(&hidden, weights, d);
    if let Some(last) = shape.last_mut() {
        *last = rows;
    }
    Tensor::from_vec(out, shape, x.device())
}

/// A table weight type rows can be read as f32 from.
pub(crate) trait Weight: Sync + Sized {
    /// `row` as f32: itself, or widened into `wide` (`row.len()` values).
    fn as_f32<'a>(row: &'a [Self], wide: &'a mut [f32]) -> &'a [f32];

    /// `vector . row`, widening through `wide` where needed.
    fn dot(vector: &[f32], row: &[Self], wide: &mut [f32]) -> f32 {
        dot(vector, Self::as_f32(row, wide))
    }
}

impl Weight for f32 {
    fn as_f32<'a>(row: &'a [f32], _wide: &'a mut [f32]) -> &'a [f32] {
        row
    }
}

impl Weight for half::f16 {
    fn as_f32<'a>(row: &'a [half::f16], wide: &'a mut [f32]) -> &'a [f32] {
        use half::slice::HalfFloatSliceExt;
        row.convert_to_f32_slice(wide);
        wide
    }

    fn dot(vector: &[f32], row: &[half::f16], wide: &mut [f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            // SAFETY: the features were just detected.
            return unsafe { dot_f16_avx512(vector, row) };
        }
        dot(vector, Self::as_f32(row, wide))
    }
}

/// `a . b` with `b` widened sixteen halves at a time in registers: Whisper's
/// output table (51,864 x 384 halves) is read this way on every decoding
/// step, and widening each row into a buffer first cost as much as the
/// products.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn dot_f16_avx512(a: &[f32], b: &[half::f16]) -> f32 {
    use std::arch::x86_64::*;
    const ALL: __mmask16 = 0xFFFF;
    let n = a.len().min(b.len());
    let whole = n / 16 * 16;
    // SAFETY: every load reads 16 values below `whole <= n`; masked loads
    // (not `loadu`, a checked `read_unaligned` in debug builds).
    unsafe {
        let mut sums = [_mm512_setzero_ps(); 4];
        let (a_ptr, b_ptr) = (a.as_ptr(), b.as_ptr().cast::<i16>());
        let mut at = 0;
        while at < whole {
            let lane = at / 16 % 4;
            let halves = _mm256_maskz_loadu_epi16(ALL, b_ptr.wrapping_add(at));
            let x = _mm512_maskz_loadu_ps(ALL, a_ptr.wrapping_add(at));
            sums[lane] = _mm512_fmadd_ps(x, _mm512_cvtph_ps(halves), sums[lane]);
            at += 16;
        }
        let total = _mm512_add_ps(
            _mm512_add_ps(sums[0], sums[1]),
            _mm512_add_ps(sums[2], sums[3]),
        );
        let tail: f32 = a[whole..n]
            .iter()
            .zip(&b[whole..n])
            .map(|(x, y)| x * y.to_f32())
            .sum();
        _mm512_reduce_add_ps(total) + tail
    }
}

/// Each `d`-long vector of `hidden` against every row of `table`
/// (`[rows, d]`): `[vectors, rows]`, table rows split across threads.
pub(crate) fn rows_dot<T: Weight>(hidden: &[f32], table: &[T], d: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let rows = table.len() / d.max(1);
    let vectors = hidden.len() / d.max(1);
    // Blocks of table rows are the work items; each row is read (and
    // widened, for f16) once and multiplied by every vector while in L1.
    const BLOCK: usize = 512;
    let per_block: Vec<Vec<f32>> = table
        .par_chunks(BLOCK * d)
        .map_init(Vec::new, |wide, block| {
            wide.resize(d, 0.0);
            let n = block.len() / d;
            let mut scores = vec![0f32; vectors * n];
            for (r, row) in block.chunks_exact(d).enumerate() {
                if vectors == 1 {
                    scores[r] = T::dot(hidden, row, wide);
                    continue;
                }
                let row = T::as_f32(row, wide);
                for (v, vector) in hidden.chunks_exact(d).enumerate() {
                    scores[v * n + r] = dot(vector, row);
                }
            }
            scores
        })
        .collect();
    let mut out = vec![0f32; vectors * rows];
    for (b, scores) in per_block.iter().enumerate() {
        let n = scores.len() / vectors.max(1);
        for (v, chunk) in scores.chunks_exact(n.max(1)).enumerate() {
            out[v * rows + b * BLOCK..][..n].copy_from_slice(chunk);
        }
    }
    out
}

/// A `[rows, d]` table of weights, kept in half precision when every value
/// is exactly a half-precision number (Whisper's CTranslate2 weights are
/// FP16 on disk): the same values, half the bytes read per decoding step.
pub(crate) enum Table {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl Table {
    pub fn new(values: Vec<f32>) -> Self {
        let exact = values
            .iter()
            .all(|&v| half::f16::from_f32(v).to_f32().to_bits() == v.to_bits());
        if exact {
            Self::F16(values.iter().map(|&v| half::f16::from_f32(v)).collect())
        } else {
            Self::F32(values)
        }
    }

    /// Row `i` (`d` values) into `out`; `None` past the last row.
    pub fn row(&self, i: usize, d: usize, out: &mut [f32]) -> Option<()> {
        match self {
            Self::F32(v) => out.copy_from_slice(v.get(i * d..(i + 1) * d)?),
            Self::F16(v) => {
                half::f16::as_f32(v.get(i * d..(i + 1) * d)?, out);
            }
        }
        Some(())
    }

    /// [`rows_dot`] against this table.
    pub fn rows_dot(&self, hidden: &[f32], d: usize) -> Vec<f32> {
        match self {
            Self::F32(v) => rows_dot(hidden, v, d),
            Self::F16(v) => rows_dot(hidden, v, d),
        }
    }
}

/// Eight independent accumulators so the loop vectorizes.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_matmul() {
        let table = Tensor::randn(0f32, 1f32, (1003, 37), &Device::Cpu).expect("table");
        let x = Tensor::randn(0f32, 1f32, (2, 3, 37), &Device::Cpu).expect("x");
        let ours = against_rows(&x, &table).expect("ours");
        assert_eq!(ours.dims(), &[2, 3, 1003]);
        let theirs = x.broadcast_matmul(&table.t().expect("t")).expect("candle");
        let worst = (ours - theirs)
            .and_then(|d| d.abs()?.flatten_all()?.max(0))
            .and_then(|m| m.to_scalar::<f32>())
            .expect("diff");
        assert!(worst < 1e-4, "{worst}");
    }

    /// Half-precision tables, one vector (the fused widening dot) and
    /// several (widened once per row), at a width with a 16-lane tail.
    #[test]
    fn half_tables_match_a_plain_product() {
        let d = 53;
        let values: Vec<f32> = (0..700 * d)
            .map(|i| half::f16::from_f32(((i * 7919 % 211) as f32 - 105.0) / 64.0).to_f32())
            .collect();
        let table = Table::new(values.clone());
        assert!(matches!(table, Table::F16(_)));
        for vectors in [1, 3] {
            let hidden: Vec<f32> = (0..vectors * d)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
                .collect();
            let got = table.rows_dot(&hidden, d);
            for v in 0..vectors {
                for r in 0..700 {
                    let want: f32 = (0..d).map(|i| hidden[v * d + i] * values[r * d + i]).sum();
                    let at = got[v * 700 + r];
                    assert!(
                        (at - want).abs() < 1e-3,
                        "vector {v} row {r}: {at} vs {want}"
                    );
                }
            }
        }
    }
}
