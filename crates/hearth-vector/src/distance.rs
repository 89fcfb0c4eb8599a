//! Distance kernels. The graph search spends nearly all of its time here, so
//! the AVX2+FMA paths are chosen at run time (the portable path stays for
//! other CPUs) and accumulate in four independent registers to hide the FMA
//! latency.

/// Inner product of two equal-length slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    // Built with AVX2+FMA (Hearth's builds use target-cpu=native): call the
    // kernel directly so it inlines into the search loop.
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the target features are enabled at compile time, and the
        // kernel reads only within both slices' bounds.
        unsafe { x86::dot(a, b) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2_fma() {
                // SAFETY: the CPU supports AVX2 and FMA (checked above).
                return unsafe { x86::dot(a, b) };
            }
        }
        dot_portable(a, b)
    }
}

/// Inner products of `q` with four rows at once: `q` is loaded once per
/// chunk and the four rows stream in parallel, which keeps more memory loads
/// in flight than one row at a time (exact scans are memory-bound).
#[inline]
pub fn dot4(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        if rows.iter().all(|r| r.len() == q.len()) {
            // SAFETY: the target features are enabled at compile time and
            // every row has `q`'s length (checked above).
            return unsafe { x86::dot4(q, rows) };
        }
    }
    rows.map(|r| dot(q, r))
}

/// Squared Euclidean distance of two equal-length slices.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    // Built with AVX2+FMA (Hearth's builds use target-cpu=native): call the
    // kernel directly so it inlines into the search loop.
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the target features are enabled at compile time, and the
        // kernel reads only within both slices' bounds.
        unsafe { x86::l2_squared(a, b) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2_fma() {
                // SAFETY: the CPU supports AVX2 and FMA (checked above).
                return unsafe { x86::l2_squared(a, b) };
            }
        }
        l2_portable(a, b)
    }
}

/// Asks the CPU to start loading the first cache lines of `v`.
#[inline]
pub fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr() as *const i8;
        // Four lines (256 bytes); the hardware prefetcher follows the rest.
        for line in 0..(v.len() * 4).div_ceil(64).min(4) {
            // SAFETY: a prefetch is a hint that never faults, and the
            // address stays within `v`.
            unsafe { _mm_prefetch(p.add(line * 64), _MM_HINT_T0) };
        }
    }
}

/// Asks the CPU to start loading all of `v` (for scans that know the next
/// vector well ahead).
#[inline]
pub fn prefetch_all(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr() as *const i8;
        for line in 0..(v.len() * 4).div_ceil(64) {
            // SAFETY: a prefetch is a hint that never faults, and the
            // address stays within `v`.
            unsafe { _mm_prefetch(p.add(line * 64), _MM_HINT_T0) };
        }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    not(all(target_feature = "avx2", target_feature = "fma"))
))]
#[inline]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    })
}

#[cfg_attr(
    all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ),
    allow(dead_code)
)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

#[cfg_attr(
    all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ),
    allow(dead_code)
)]
fn l2_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            let d = a[c * 8 + l] - b[c * 8 + l];
            acc[l] += d * d;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        let d = a[i] - b[i];
        sum += d * d;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (whole body): every load reads 8 floats at offsets < n.
        unsafe {
            while i + 32 <= n {
                for (k, slot) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(pa.add(i + 8 * k));
                    let y = _mm256_loadu_ps(pb.add(i + 8 * k));
                    *slot = _mm256_fmadd_ps(x, y, *slot);
                }
                i += 32;
            }
            while i + 8 <= n {
                let x = _mm256_loadu_ps(pa.add(i));
                let y = _mm256_loadu_ps(pb.add(i));
                acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
                i += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut sum = hsum(s);
            while i < n {
                sum += *pa.add(i) * *pb.add(i);
                i += 1;
            }
            sum
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        let n = q.len();
        let pq = q.as_ptr();
        let p = rows.map(|r| r.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (whole body): every row has n floats; loads stay below n.
        unsafe {
            while i + 8 <= n {
                let x = _mm256_loadu_ps(pq.add(i));
                for k in 0..4 {
                    acc[k] = _mm256_fmadd_ps(x, _mm256_loadu_ps(p[k].add(i)), acc[k]);
                }
                i += 8;
            }
            let mut out = [0.0f32; 4];
            for k in 0..4 {
                out[k] = hsum(acc[k]);
                for j in i..n {
                    out[k] += *pq.add(j) * *p[k].add(j);
                }
            }
            out
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (whole body): every load reads 8 floats at offsets < n.
        unsafe {
            while i + 32 <= n {
                for (k, slot) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(pa.add(i + 8 * k));
                    let y = _mm256_loadu_ps(pb.add(i + 8 * k));
                    let d = _mm256_sub_ps(x, y);
                    *slot = _mm256_fmadd_ps(d, d, *slot);
                }
                i += 32;
            }
            while i + 8 <= n {
                let x = _mm256_loadu_ps(pa.add(i));
                let y = _mm256_loadu_ps(pb.add(i));
                let d = _mm256_sub_ps(x, y);
                acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
                i += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut sum = hsum(s);
            while i < n {
                let d = *pa.add(i) - *pb.add(i);
                sum += d * d;
                i += 1;
            }
            sum
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_with_the_portable_code_at_every_length() {
        for n in [0usize, 1, 7, 8, 9, 31, 32, 33, 100, 384, 1536] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 2.0).collect();
            let d = dot(&a, &b);
            let e = dot_portable(&a, &b);
            assert!(
                (d - e).abs() <= 1e-3 * (1.0 + e.abs()),
                "dot n={n}: {d} vs {e}"
            );
            let four = dot4(&a, [&b, &a, &b, &a]);
            assert!(
                (four[0] - dot_portable(&a, &b)).abs() <= 1e-3 * (1.0 + e.abs()),
                "dot4 n={n}"
            );
            assert!(
                (four[1] - dot_portable(&a, &a)).abs() <= 1e-3 * (1.0 + four[1].abs()),
                "dot4 n={n}"
            );
            let d = l2_squared(&a, &b);
            let e = l2_portable(&a, &b);
            assert!(
                (d - e).abs() <= 1e-3 * (1.0 + e.abs()),
                "l2 n={n}: {d} vs {e}"
            );
        }
    }
}
