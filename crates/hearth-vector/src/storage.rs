//! Stored vectors, each starting on a 64-byte cache line, with its inverse
//! norm in the padding after it. Aligned rows keep every AVX load inside one
//! cache line and a 384-dimension vector on 24 lines rather than 25; the
//! inverse norm rides in a line the hardware prefetcher streams in anyway.

/// One cache line of floats. `repr(C)` with no padding: a `[Line]` is a
/// valid `[f32]` sixteen times as long.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

const LINE_FLOATS: usize = 16;

pub struct VectorRows {
    dims: usize,
    /// Floats per row: `dims + 1` rounded up to whole lines.
    stride: usize,
    lines: Vec<Line>,
}

impl VectorRows {
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            stride: (dims + 1).div_ceil(LINE_FLOATS) * LINE_FLOATS,
            lines: Vec::new(),
        }
    }

    fn floats(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` over `[f32; 16]` without padding, so the
        // lines are `16 * len` contiguous, initialised, aligned floats.
        unsafe {
            std::slice::from_raw_parts(
                self.lines.as_ptr() as *const f32,
                self.lines.len() * LINE_FLOATS,
            )
        }
    }

    fn floats_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `floats`, and `&mut self` makes the borrow unique.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.lines.as_mut_ptr() as *mut f32,
                self.lines.len() * LINE_FLOATS,
            )
        }
    }

    /// Appends a row; `values.len()` must equal the dimensions.
    pub fn push(&mut self, values: &[f32]) {
        debug_assert_eq!(values.len(), self.dims);
        let norm = crate::distance::dot(values, values).sqrt();
        let start = self.lines.len() * LINE_FLOATS;
        self.lines.resize(
            self.lines.len() + self.stride / LINE_FLOATS,
            Line([0.0; 16]),
        );
        let dims = self.dims;
        let row = &mut self.floats_mut()[start..start + dims + 1];
        row[..dims].copy_from_slice(values);
        row[dims] = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    }

    #[inline]
    pub fn get(&self, row: u32) -> &[f32] {
        let start = row as usize * self.stride;
        &self.floats()[start..start + self.dims]
    }

    #[inline]
    pub fn inv_norm(&self, row: u32) -> f32 {
        self.floats()[row as usize * self.stride + self.dims]
    }

    pub fn len(&self) -> usize {
        self.lines.len() * LINE_FLOATS / self.stride
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_are_line_aligned_and_keep_their_values() {
        let mut rows = super::VectorRows::new(20);
        rows.push(&[3.0; 20]);
        rows.push(&[4.0; 20]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.get(1), &[4.0; 20]);
        assert_eq!(rows.get(1).as_ptr() as usize % 64, 0);
        assert!((rows.inv_norm(0) - 1.0 / (9.0f32 * 20.0).sqrt()).abs() < 1e-7);
    }
}
