//! Image classification on candle: EfficientNet-Lite0 (ImageNet-1k) loaded
//! from the legacy (pre-1.6, non-zip) PyTorch format its registry package
//! ships, images decoded with `image` (PNG, JPEG, WebP), resized and
//! scaled as Lite was trained (shorter side 256, centre 224, (x - 127) /
//! 128, TF "SAME" padding). `bench/efficientnet_reference.py` is the numpy
//! reference of the same network on the same file.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

/// ImageNet-1k class names in class order (the first WordNet lemma of each
/// synset, as timm's `imagenet_synset_to_lemma.txt` lists them).
const IMAGENET_LABELS: &str = include_str!("imagenet_labels.txt");

/// 0x1950a86a20f9469cfc6c, little-endian, as `torch.save` wrote it.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Encoded images larger than this are refused before decoding.
pub const MAX_IMAGE_BYTES: usize = 10 << 20;
/// Decoded images with more pixels than this are refused (decompression
/// bombs).
const MAX_PIXELS: u64 = 64 << 20;
const INPUT: u32 = 224;
const RESIZE: u32 = 256;

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("cannot read the weights {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("{0}")]
    BadImage(String),
    #[error("image classification failed: {0}")]
    Compute(String),
}

fn compute(e: candle_core::Error) -> VisionError {
    VisionError::Compute(e.to_string())
}

/// The F32 tensors of a legacy PyTorch file: three small pickles (magic
/// number, protocol, system info), the state dict, whose tensors name storages by
/// key, a pickle of the storage keys, then each storage as a little-endian
/// u64 element count followed by its data.
pub fn read_legacy_pth(path: &Path) -> Result<HashMap<String, Tensor>, VisionError> {
    let load = |reason: String| VisionError::Load {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| load(e.to_string()))?;
    // The first pickle is the format's magic number, a 10-byte LONG1 that
    // candle's parser cannot hold in an i64: it is checked here instead.
    if bytes.get(..4) != Some(&[0x80, 0x02, 0x8a, 0x0a][..])
        || bytes.get(4..14) != Some(&LEGACY_MAGIC[..])
        || bytes.get(14) != Some(&b'.')
    {
        return Err(load("not a legacy PyTorch file (no magic number)".into()));
    }
    let mut cursor = Cursor::new(&bytes[15..]);
    let mut next = || -> Result<Object, VisionError> {
        let mut stack = Stack::empty();
        stack
            .read_loop(&mut cursor)
            .map_err(|e| load(format!("not a legacy PyTorch file: {e}")))?;
        stack.finalize().map_err(|e| load(e.to_string()))
    };
    // Protocol version and system info.
    for _ in 0..2 {
        next()?;
    }
    let Object::Dict(entries) = next()? else {
        return Err(load("the state dict is not a dict".into()));
    };
    let keys: Vec<String> = match next()? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| {
                k.unicode()
                    .map_err(|_| load("a storage key is not a string".into()))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(load("no storage key list".into())),
    };
    let infos: Vec<_> = entries
        .into_iter()
        .filter_map(|(name, value)| value.into_tensor_info(name, Path::new("")).ok().flatten())
        .collect();
    let dtype_of = |key: &str| {
        infos
            .iter()
            .find(|i| i.path.trim_start_matches('/') == key)
            .map(|i| i.dtype)
    };
    // Where each storage's data starts, walking the table in key order.
    let mut at = 15 + cursor.position() as usize;
    let mut storages: HashMap<&str, usize> = HashMap::new();
    for key in &keys {
        let count = bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| load("the storage table ends early".into()))?
            as usize;
        at += 8;
        storages.insert(key, at);
        let size = dtype_of(key).map_or(4, |d| d.size_in_bytes());
        at += count * size;
    }
    if at != bytes.len() {
        return Err(load(format!(
            "the storages end at byte {at}, the file at {}",
            bytes.len()
        )));
    }
    let mut tensors = HashMap::new();
    for info in infos {
        if info.dtype != DType::F32 {
            continue;
        }
        let key = info.path.trim_start_matches('/');
        let start = storages
            .get(key)
            .ok_or_else(|| load(format!("{} names a storage the file lacks", info.name)))?
            + info.layout.start_offset();
        let dims = info.layout.dims().to_vec();
        let strides = info.layout.stride().to_vec();
        // A tensor saved transposed is a permutation of a contiguous one:
        // read it in stride order, then permute back.
        let mut order: Vec<usize> = (0..dims.len()).collect();
        order.sort_by(|&a, &b| strides[b].cmp(&strides[a]));
        let stored: Vec<usize> = order.iter().map(|&i| dims[i]).collect();
        let contiguous = order
            .iter()
            .enumerate()
            .all(|(k, &i)| dims[i] == 1 || strides[i] == stored[k + 1..].iter().product::<usize>());
        if !contiguous {
            return Err(load(format!(
                "{} has a layout this reader does not take",
                info.name
            )));
        }
        let len = stored.iter().product::<usize>() * 4;
        let data = bytes
            .get(start..start + len)
            .ok_or_else(|| load(format!("{} runs past its storage", info.name)))?;
        let mut back = vec![0; order.len()];
        for (k, &i) in order.iter().enumerate() {
            back[i] = k;
        }
        let tensor = Tensor::from_raw_buffer(data, DType::F32, &stored, &Device::Cpu)
            .and_then(|t| t.permute(back))
            .and_then(|t| t.contiguous())
            .map_err(|e| load(e.to_string()))?;
        tensors.insert(info.name, tensor);
    }
    Ok(tensors)
}

/// A convolution with its batch norm folded in (scale and shift per
/// output channel), as inference needs it.
struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    groups: usize,
}

impl ConvBn {
    fn load(
        w: &HashMap<String, Tensor>,
        conv: &str,
        bn: &str,
        stride: usize,
        depthwise: bool,
    ) -> Result<Self, VisionError> {
        let get = |name: String| {
            w.get(&name)
                .cloned()
                .ok_or_else(|| VisionError::Compute(format!("the weights lack {name}")))
        };
        let weight = get(format!("{conv}.weight"))?;
        let gamma = get(format!("{bn}.weight"))?;
        let beta = get(format!("{bn}.bias"))?;
        let mean = get(format!("{bn}.running_mean"))?;
        let var = get(format!("{bn}.running_var"))?;
        // lukemelas' EfficientNet uses batch norm epsilon 1e-3.
        let scale = gamma
            .broadcast_div(&(var + 1e-3).map_err(compute)?.sqrt().map_err(compute)?)
            .map_err(compute)?;
        let bias = (beta - mean.broadcast_mul(&scale).map_err(compute)?).map_err(compute)?;
        let out = weight.dim(0).map_err(compute)?;
        let weight = weight
            .broadcast_mul(&scale.reshape((out, 1, 1, 1)).map_err(compute)?)
            .map_err(compute)?;
        Ok(Self {
            groups: if depthwise { out } else { 1 },
            weight,
            bias: bias.reshape((1, out, 1, 1)).map_err(compute)?,
            stride,
        })
    }

    /// TF "SAME" padding: the output is ceil(input / stride), the extra
    /// row and column of padding go after, as the weights were trained.
    fn forward(&self, x: &Tensor) -> Result<Tensor, VisionError> {
        let k = self.weight.dim(2).map_err(compute)?;
        let (_, _, h, w) = x.dims4().map_err(compute)?;
        let pad = |n: usize| {
            let out = n.div_ceil(self.stride);
            ((out - 1) * self.stride + k).saturating_sub(n)
        };
        let (ph, pw) = (pad(h), pad(w));
        let x = x
            .pad_with_zeros(2, ph / 2, ph - ph / 2)
            .and_then(|x| x.pad_with_zeros(3, pw / 2, pw - pw / 2))
            .map_err(compute)?;
        x.conv2d(&self.weight, 0, self.stride, 1, self.groups)
            .and_then(|y| y.broadcast_add(&self.bias))
            .map_err(compute)
    }
}

fn relu6(x: &Tensor) -> Result<Tensor, VisionError> {
    x.clamp(0f32, 6f32).map_err(compute)
}

struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

/// (kernel, stride) of the 16 MBConv blocks of Lite0 (the kernel is read
/// from the weights; the stride is the architecture's).
const STRIDES: [usize; 16] = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1];

pub struct ImageClassifier {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    fc_weight: Tensor,
    fc_bias: Tensor,
    labels: Vec<&'static str>,
}

impl ImageClassifier {
    /// EfficientNet-Lite0 from the folder holding its `.pth` file.
    pub fn load(dir: &Path) -> Result<Self, VisionError> {
        let file = std::fs::read_dir(dir)
            .map_err(|e| VisionError::Load {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "pth"))
            .ok_or_else(|| VisionError::Load {
                path: dir.display().to_string(),
                reason: "no .pth file".into(),
            })?;
        let w = read_legacy_pth(&file)?;
        let mut blocks = Vec::with_capacity(STRIDES.len());
        for (i, &stride) in STRIDES.iter().enumerate() {
            let p = format!("_blocks.{i}.");
            let expand = if w.contains_key(&format!("{p}_expand_conv.weight")) {
                Some(ConvBn::load(
                    &w,
                    &format!("{p}_expand_conv"),
                    &format!("{p}_bn0"),
                    1,
                    false,
                )?)
            } else {
                None
            };
            let depthwise = ConvBn::load(
                &w,
                &format!("{p}_depthwise_conv"),
                &format!("{p}_bn1"),
                stride,
                true,
            )?;
            let project = ConvBn::load(
                &w,
                &format!("{p}_project_conv"),
                &format!("{p}_bn2"),
                1,
                false,
            )?;
            let input = expand
                .as_ref()
                .map_or(&depthwise.weight, |e| &e.weight)
                .dim(if expand.is_some() { 1 } else { 0 })
                .map_err(compute)?;
            let output = project.weight.dim(0).map_err(compute)?;
            blocks.push(Block {
                residual: stride == 1 && input == output,
                expand,
                depthwise,
                project,
            });
        }
        let get = |name: &str| {
            w.get(name)
                .cloned()
                .ok_or_else(|| VisionError::Compute(format!("the weights lack {name}")))
        };
        let labels: Vec<&'static str> = IMAGENET_LABELS.lines().collect();
        let fc_weight = get("_fc.weight")?;
        if fc_weight.dim(0).map_err(compute)? != labels.len() {
            return Err(VisionError::Compute(format!(
                "the classifier has {:?} classes, not ImageNet's {}",
                fc_weight.dims(),
                labels.len()
            )));
        }
        Ok(Self {
            stem: ConvBn::load(&w, "_conv_stem", "_bn0", 2, false)?,
            blocks,
            head: ConvBn::load(&w, "_conv_head", "_bn1", 1, false)?,
            fc_weight: fc_weight.t().map_err(compute)?,
            fc_bias: get("_fc.bias")?,
            labels,
        })
    }

    /// The `top` most likely labels of an encoded image, best first.
    pub fn classify(&self, image: &[u8], top: usize) -> Result<Vec<(String, f32)>, VisionError> {
        let x = preprocess(image)?;
        let mut x = relu6(&self.stem.forward(&x)?)?;
        for b in &self.blocks {
            let input = x.clone();
            if let Some(e) = &b.expand {
                x = relu6(&e.forward(&x)?)?;
            }
            x = relu6(&b.depthwise.forward(&x)?)?;
            x = b.project.forward(&x)?;
            if b.residual {
                x = (x + input).map_err(compute)?;
            }
        }
        let x = relu6(&self.head.forward(&x)?)?;
        let pooled = x.mean((2, 3)).map_err(compute)?;
        let logits = pooled
            .matmul(&self.fc_weight)
            .and_then(|l| l.broadcast_add(&self.fc_bias))
            .and_then(|l| candle_nn::ops::softmax_last_dim(&l))
            .and_then(|p| p.squeeze(0))
            .and_then(|p| p.to_vec1::<f32>())
            .map_err(compute)?;
        let mut ranked: Vec<(usize, f32)> = logits.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(ranked
            .into_iter()
            .take(top)
            .map(|(i, p)| (self.labels[i].to_string(), p))
            .collect())
    }
}

/// Decodes and scales an image to the network's 1×3×224×224 input.
fn preprocess(bytes: &[u8]) -> Result<Tensor, VisionError> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(VisionError::BadImage(format!(
            "the image is {} bytes; at most {MAX_IMAGE_BYTES} are read",
            bytes.len()
        )));
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| VisionError::BadImage(format!("`image`: {e}")))?;
    if reader.format().is_none() {
        return Err(VisionError::BadImage(
            "`image` is not a PNG, JPEG or WebP image".into(),
        ));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| VisionError::BadImage(format!("`image` cannot be read: {e}")))?;
    if u64::from(w) * u64::from(h) > MAX_PIXELS || w == 0 || h == 0 {
        return Err(VisionError::BadImage(format!(
            "`image` is {w}x{h} pixels; at most {MAX_PIXELS} pixels are decoded"
        )));
    }
    let decoded = image::load_from_memory(bytes)
        .map_err(|e| VisionError::BadImage(format!("`image` cannot be decoded: {e}")))?
        .to_rgb8();
    let scale = RESIZE as f32 / w.min(h) as f32;
    let (rw, rh) = (
        ((w as f32 * scale).round() as u32).max(INPUT),
        ((h as f32 * scale).round() as u32).max(INPUT),
    );
    let resized = image::imageops::resize(&decoded, rw, rh, image::imageops::FilterType::Triangle);
    let (left, top) = ((rw - INPUT) / 2, (rh - INPUT) / 2);
    let crop = image::imageops::crop_imm(&resized, left, top, INPUT, INPUT).to_image();
    let pixels: Vec<f32> = crop
        .into_raw()
        .into_iter()
        .map(|v| (f32::from(v) - 127.0) / 128.0)
        .collect();
    Tensor::from_vec(pixels, (1, INPUT as usize, INPUT as usize, 3), &Device::Cpu)
        .and_then(|t| t.permute((0, 3, 1, 2)))
        .and_then(|t| t.contiguous())
        .map_err(compute)
}
