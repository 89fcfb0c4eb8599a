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
    let vectors = hidden.len() / d;
    let mut out = vec![0f32; vectors * rows];
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(8);
    let rows_per_thread = rows.div_ceil(threads);
    for (row, out) in hidden.chunks_exact(d).zip(out.chunks_exact_mut(rows)) {
        std::thread::scope(|scope| {
            for (part, out) in out.chunks_mut(rows_per_thread).enumerate() {
                let first = part * rows_per_thread;
                scope.spawn(move || {
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = dot(row, &weights[(first + i) * d..(first + i + 1) * d]);
                    }
                });
            }
        });
    }
    if let Some(last) = shape.last_mut() {
        *last = rows;
    }
    Tensor::from_vec(out, shape, x.device())
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
}
