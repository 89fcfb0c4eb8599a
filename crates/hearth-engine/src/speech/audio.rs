//! Audio in: any container and codec symphonia reads (WAV, MP3, FLAC, Ogg
//! Vorbis), mixed down to mono and resampled to Whisper's 16 kHz; and
//! Whisper's log-mel front end exactly as OpenAI computes it (centred,
//! reflect-padded periodic-Hann STFT, last frame dropped, |X|^2 through
//! librosa's Slaney filterbank, log10 clamped 8 below the maximum). The
//! whisper.cpp-style `pcm_to_mel` in candle-transformers frames without
//! centring and doubles the power of every non-DC bin, which shifts the
//! features off what the model was trained on.

use std::io::Cursor;

use candle_core::{Device, Tensor};

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::SpeechError;

pub const SAMPLE_RATE: u32 = 16_000;

fn bad(message: impl Into<String>) -> SpeechError {
    SpeechError::BadAudio(message.into())
}

/// Mono 16 kHz samples in [-1, 1] from an encoded audio file.
/// `max_seconds` bounds the decoded length, so a small compressed file
/// cannot expand into hours of samples.
pub fn decode(bytes: &[u8], max_seconds: f64) -> Result<Vec<f32>, SpeechError> {
    if bytes.is_empty() {
        return Err(bad("`audio` is empty"));
    }
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let probed = symphonia::default::get_probe()
        .format(
            &Hint::new(),
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| {
            bad(format!(
                "`audio` is not audio Hearth can decode (WAV, MP3, FLAC or Ogg Vorbis): {e}"
            ))
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| bad("`audio` holds no audio track"))?;
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| bad(format!("`audio` uses a codec Hearth cannot decode: {e}")))?;
    let mut rate = track.codec_params.sample_rate;
    let mut mono: Vec<f32> = Vec::new();
    let mut buffer: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break;
            }
            // A cut-off stream still yields what was decoded before the cut.
            Err(_) if !mono.is_empty() => break,
            Err(e) => return Err(bad(format!("`audio` cannot be read: {e}"))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // One corrupt frame is skipped, as players do.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(bad(format!("`audio` cannot be decoded: {e}"))),
        };
        let spec = *decoded.spec();
        rate = Some(spec.rate);
        let channels = spec.channels.count().max(1);
        let samples = match &mut buffer {
            Some(b) if b.capacity() >= decoded.capacity() * channels => b,
            _ => buffer.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        samples.copy_interleaved_ref(decoded);
        mono.extend(
            samples
                .samples()
                .chunks(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
        if mono.len() as f64 > max_seconds * f64::from(spec.rate) {
            return Err(bad(format!(
                "`audio` is longer than {max_seconds} seconds, the most one request may hold"
            )));
        }
    }
    let rate = rate.ok_or_else(|| bad("`audio` has no sample rate"))?;
    if mono.is_empty() {
        return Err(bad("`audio` holds no samples"));
    }
    Ok(resample(&mono, rate, SAMPLE_RATE))
}

/// Band-limited resampling (a Hann-windowed sinc, cut off at the lower of
/// the two Nyquist rates so downsampling does not alias).
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    const HALF_WIDTH: f64 = 16.0;
    let ratio = f64::from(to) / f64::from(from);
    let cutoff = ratio.min(1.0) * 0.95;
    // The kernel spans HALF_WIDTH zero crossings of the cutoff on each side.
    let reach = HALF_WIDTH / cutoff;
    let out_len = (input.len() as f64 * ratio).round() as usize;
    // Output n sits at input position n * from / to: its fractional part
    // takes only `to / gcd` values, so each phase's kernel is computed once
    // (a sin and a cos per tap per output sample were most of the time).
    let step = gcd(from, to);
    let phases = (to / step) as usize;
    let taps_before = reach.ceil() as i64;
    let kernels: Vec<Vec<f64>> = (0..phases)
        .map(|p| {
            let frac = p as f64 * f64::from(step) / f64::from(to);
            (-taps_before..=taps_before)
                .map(|j| {
                    let t = j as f64 - frac;
                    if t.abs() > reach {
                        return 0.0;
                    }
                    let x = t * cutoff;
                    let sinc = if x.abs() < 1e-9 {
                        1.0
                    } else {
                        (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
                    };
                    sinc * (0.5 + 0.5 * (std::f64::consts::PI * t / reach).cos())
                })
                .collect()
        })
        .collect();
    let mut output = Vec::with_capacity(out_len);
    for n in 0..out_len as u64 {
        let position = n * u64::from(from);
        let base = (position / u64::from(to)) as i64;
        let phase = ((position % u64::from(to)) / u64::from(step)) as usize;
        let (mut acc, mut norm) = (0.0f64, 0.0f64);
        for (j, weight) in (-taps_before..).zip(&kernels[phase]) {
            let i = base + j;
            if *weight == 0.0 || i < 0 {
                continue;
            }
            let Some(sample) = input.get(i as usize) else {
                break;
            };
            acc += f64::from(*sample) * weight;
            norm += weight;
        }
        output.push(if norm.abs() > 1e-12 {
            (acc / norm) as f32
        } else {
            0.0
        });
    }
    output
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn hz_to_mel(hz: f64) -> f64 {
    // Slaney: linear below 1 kHz, logarithmic above.
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = (6.4f64).ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        min_log_mel + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = (6.4f64).ln() / 27.0;
    if mel >= min_log_mel {
        MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp()
    } else {
        F_SP * mel
    }
}

/// `librosa.filters.mel(sr=16000, n_fft, n_mels)` row-major
/// `[n_mels, n_fft / 2 + 1]`, the matrix Whisper's front end uses.
pub fn mel_filters(n_mels: usize, n_fft: usize) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|i| i as f64 * f64::from(SAMPLE_RATE) / n_fft as f64)
        .collect();
    let (low, high) = (hz_to_mel(0.0), hz_to_mel(f64::from(SAMPLE_RATE) / 2.0));
    let mel_points: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(low + (high - low) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut filters = vec![0f32; n_mels * bins];
    for m in 0..n_mels {
        let (left, centre, right) = (mel_points[m], mel_points[m + 1], mel_points[m + 2]);
        let norm = 2.0 / (right - left);
        for (k, f) in fft_freqs.iter().enumerate() {
            let rising = (f - left) / (centre - left);
            let falling = (right - f) / (right - centre);
            let weight = rising.min(falling).max(0.0);
            filters[m * bins + k] = (weight * norm) as f32;
        }
    }
    filters
}

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// STFT frames per matrix product (bounds the memory of long audio).
const FRAMES_PER_PASS: usize = 3000;

/// Whisper's log-mel front end; the DFT runs as one matrix product per
/// block of frames.
pub struct LogMel {
    /// `[N_FFT, 2 * bins]`: the Hann window times cos, then times -sin.
    basis: Tensor,
    /// `[bins, n_mels]`.
    filters: Tensor,
}

impl LogMel {
    pub fn new(n_mels: usize) -> candle_core::Result<Self> {
        let bins = N_FFT / 2 + 1;
        let mut basis = vec![0f32; N_FFT * 2 * bins];
        for n in 0..N_FFT {
            let window = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos();
            for k in 0..bins {
                let angle = 2.0 * std::f64::consts::PI * (k * n % N_FFT) as f64 / N_FFT as f64;
                basis[n * 2 * bins + k] = (window * angle.cos()) as f32;
                basis[n * 2 * bins + bins + k] = (-window * angle.sin()) as f32;
            }
        }
        let basis = Tensor::from_vec(basis, (N_FFT, 2 * bins), &Device::Cpu)?;
        let filters = Tensor::from_vec(mel_filters(n_mels, N_FFT), (n_mels, bins), &Device::Cpu)?
            .t()?
            .contiguous()?;
        Ok(Self { basis, filters })
    }

    /// `[n_mels, frames]` features of `pcm`, one frame per 160 samples.
    pub fn compute(&self, pcm: &[f32]) -> candle_core::Result<Tensor> {
        let half = N_FFT / 2;
        // Reflect padding needs more samples than the pad; shorter input
        // is zero-padded first.
        let mut signal = pcm.to_vec();
        if signal.len() <= half {
            signal.resize(half + 1, 0.0);
        }
        let len = signal.len();
        let mut padded = Vec::with_capacity(len + 2 * half);
        padded.extend((1..=half).rev().map(|i| signal[i]));
        padded.extend_from_slice(&signal);
        padded.extend((len - 1 - half..len - 1).rev().map(|i| signal[i]));
        // torch.stft's frame count, minus the last frame as Whisper drops it.
        let frames = (padded.len() - N_FFT) / HOP;
        let bins = N_FFT / 2 + 1;
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < frames {
            let count = FRAMES_PER_PASS.min(frames - start);
            let mut windows = Vec::with_capacity(count * N_FFT);
            for f in start..start + count {
                windows.extend_from_slice(&padded[f * HOP..f * HOP + N_FFT]);
            }
            let windows = Tensor::from_vec(windows, (count, N_FFT), &Device::Cpu)?;
            let spectrum = windows.matmul(&self.basis)?;
            let power =
                (spectrum.narrow(1, 0, bins)?.sqr()? + spectrum.narrow(1, bins, bins)?.sqr()?)?;
            blocks.push(power.matmul(&self.filters)?);
            start += count;
        }
        let mel = Tensor::cat(&blocks, 0)?.clamp(1e-10f32, f32::MAX)?.log()?;
        let log10 = (mel / std::f64::consts::LN_10)?;
        let floor = log10.max_all()?.to_scalar::<f32>()? - 8.0;
        let clamped = log10.clamp(floor, f32::MAX)?;
        ((clamped + 4.0)? / 4.0)?.t()?.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_filters_match_librosa() {
        // openai-whisper's shipped `assets/mel_filters.npz` (`mel_80`,
        // librosa's output saved once): three entries and two sums.
        let f = mel_filters(80, 400);
        let bins = 201;
        assert!((f[1] - 0.024_862_595).abs() < 1e-7, "{}", f[1]);
        assert!(
            (f[bins + 2] - 0.022_871_772).abs() < 1e-7,
            "{}",
            f[bins + 2]
        );
        let last_row: f32 = f[79 * bins..].iter().sum();
        assert!((last_row - 0.024_925_34).abs() < 1e-6, "{last_row}");
        let total: f32 = f.iter().sum();
        assert!((total - 1.999_024_2).abs() < 1e-5, "{total}");
        assert!(f.iter().all(|v| *v >= 0.0));
    }

    #[test]
    fn log_mel_matches_the_reference_front_end() {
        // faster-whisper's numpy FeatureExtractor (OpenAI's arithmetic) on
        // one second of 440 Hz + 1234 Hz, padding=0: (frame, mel) -> value.
        let pcm: Vec<f32> = (0..16_000)
            .map(|i| {
                let t = i as f64 / 16_000.0;
                (0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                    + 0.25 * (2.0 * std::f64::consts::PI * 1234.0 * t).sin()) as f32
            })
            .collect();
        let mel = LogMel::new(80)
            .and_then(|m| m.compute(&pcm))
            .and_then(|t| t.to_vec2::<f32>())
            .unwrap_or_default();
        assert_eq!((mel.len(), mel.first().map_or(0, Vec::len)), (80, 100));
        for (frame, bin, expected) in [
            (0, 0, 1.017_858_1),
            (0, 10, 1.343_601_3),
            (50, 10, 1.348_737_4),
            (50, 40, -0.561_794_3),
            (99, 79, -0.405_522_8),
            (30, 25, -0.345_216_6),
        ] {
            let got = mel[bin][frame];
            assert!(
                (got - expected).abs() < 1e-3,
                "({frame}, {bin}): {got} vs {expected}"
            );
        }
    }

    #[test]
    fn resampling_keeps_a_tone_and_its_length() {
        let from = 22_050;
        let tone: Vec<f32> = (0..from)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / from as f32).sin())
            .collect();
        let out = resample(&tone, from as u32, SAMPLE_RATE);
        assert_eq!(out.len(), SAMPLE_RATE as usize);
        let expected: Vec<f32> = (0..SAMPLE_RATE as usize)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin())
            .collect();
        let worst = out[100..15_900]
            .iter()
            .zip(&expected[100..15_900])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.01, "{worst}");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            decode(b"this is not audio at all, just text", 60.0),
            Err(SpeechError::BadAudio(_))
        ));
        assert!(matches!(decode(b"", 60.0), Err(SpeechError::BadAudio(_))));
    }
}
