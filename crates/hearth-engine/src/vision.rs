//! Image classification on candle, one classifier for two networks:
//! EfficientNet-Lite0 (ImageNet-1k) from the legacy (pre-1.6, non-zip)
//! PyTorch format its registry package ships, scaled as Lite was trained
//! (shorter side 256, centre 224, (x - 127) / 128, TF "SAME" padding;
//! `bench/efficientnet_reference.py` is the numpy reference of the same
//! network on the same file); and ResNet from the Hugging Face layout
//! (`microsoft/resnet-50`: `config.json` with its labels,
//! `model.safetensors`, `preprocessor_config.json`). Images are decoded
//! with `image` (PNG, JPEG, WebP).

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
    #[error("the vision model failed: {0}")]
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
    /// TensorFlow's "SAME" padding (EfficientNet-Lite) rather than
    /// PyTorch's symmetric `kernel / 2` (ResNet).
    same: bool,
}

impl ConvBn {
    fn load(
        w: &HashMap<String, Tensor>,
        conv: &str,
        bn: &str,
        stride: usize,
        depthwise: bool,
    ) -> Result<Self, VisionError> {
        // lukemelas' EfficientNet uses batch norm epsilon 1e-3.
        Self::load_with(w, conv, bn, stride, depthwise, 1e-3, true)
    }

    fn load_with(
        w: &HashMap<String, Tensor>,
        conv: &str,
        bn: &str,
        stride: usize,
        depthwise: bool,
        eps: f64,
        same: bool,
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
        let scale = gamma
            .broadcast_div(&(var + eps).map_err(compute)?.sqrt().map_err(compute)?)
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
            same,
        })
    }

    /// TF "SAME" padding: the output is ceil(input / stride), the extra
    /// row and column of padding go after, as the weights were trained.
    fn forward(&self, x: &Tensor) -> Result<Tensor, VisionError> {
        let k = self.weight.dim(2).map_err(compute)?;
        if !self.same {
            let y = if k == 1 && self.stride == 1 {
                pointwise(x, &self.weight)
            } else if self.groups == 1 {
                x.pad_with_zeros(2, k / 2, k / 2)
                    .and_then(|x| x.pad_with_zeros(3, k / 2, k / 2))
                    .and_then(|x| banded(&x, &self.weight, self.stride))
            } else {
                x.conv2d(&self.weight, k / 2, self.stride, 1, self.groups)
            };
            return y.and_then(|y| y.broadcast_add(&self.bias)).map_err(compute);
        }
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
        let y = if self.groups > 1 {
            depthwise(&x, &self.weight, self.stride)
        } else if k == 1 && self.stride == 1 {
            pointwise(&x, &self.weight)
        } else {
            banded(&x, &self.weight, self.stride)
        };
        y.and_then(|y| y.broadcast_add(&self.bias)).map_err(compute)
    }
}

/// Unfolded values per band of [`banded`]: about 16 MB, so that a band
/// stays in cache instead of being page-faulted in.
const BAND_VALUES: usize = 4 << 20;

/// A k x k convolution (one group) of an already padded `[1, C, H, W]`
/// input as matrix products over bands of output rows. candle unfolds the
/// whole input first (im2col): at detection sizes a ResNet stage-1 3x3
/// convolution unfolds to ~140 MB, freshly allocated at every call.
fn banded(x: &Tensor, weight: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let (o, _, k, _) = weight.dims4()?;
    let (oh, ow) = ((h - k) / stride + 1, (w - k) / stride + 1);
    let input: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let kernel = weight.reshape((o, c * k * k))?;
    let band = (BAND_VALUES / (c * k * k * ow).max(1)).clamp(1, oh);
    let mut pieces = Vec::with_capacity(oh.div_ceil(band));
    for start in (0..oh).step_by(band) {
        let rows = band.min(oh - start);
        let cols = rows * ow;
        let mut unfolded = vec![0f32; c * k * k * cols];
        for (r, dst) in unfolded.chunks_exact_mut(cols).enumerate() {
            let (channel, a, b) = (r / (k * k), r / k % k, r % k);
            let plane = &input[channel * h * w..(channel + 1) * h * w];
            for (i, row) in dst.chunks_exact_mut(ow).enumerate() {
                let src = &plane[((start + i) * stride + a) * w + b..];
                if stride == 1 {
                    row.copy_from_slice(&src[..ow]);
                } else {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = src[j * stride];
                    }
                }
            }
        }
        let unfolded = Tensor::from_vec(unfolded, (c * k * k, cols), x.device())?;
        pieces.push(kernel.matmul(&unfolded)?);
    }
    Tensor::cat(&pieces, 1)?.reshape((1, o, oh, ow))
}

/// A 1 x 1 convolution as the matrix product it is, `[O, C] x [C, H W]`
/// (candle's convolution unfolds the input first).
fn pointwise(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let out = weight.dim(0)?;
    weight
        .reshape((out, c))?
        .broadcast_matmul(&x.reshape((b, c, h * w))?)?
        .reshape((b, out, h, w))
}

/// A depthwise convolution (one k x k filter per channel) of an already
/// padded `[1, C, H, W]` input. candle runs a grouped convolution as one
/// convolution per group, thousands of tiny calls for a depthwise layer,
/// which made them most of EfficientNet's time (7x slower than numpy).
fn depthwise(x: &Tensor, weight: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    let (_, channels, h, w) = x.dims4()?;
    let k = weight.dim(2)?;
    let (oh, ow) = ((h - k) / stride + 1, (w - k) / stride + 1);
    let input: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let filters: Vec<f32> = weight.flatten_all()?.to_vec1()?;
    let mut out = vec![0f32; channels * oh * ow];
    for c in 0..channels {
        let plane = &input[c * h * w..(c + 1) * h * w];
        let filter = &filters[c * k * k..(c + 1) * k * k];
        let target = &mut out[c * oh * ow..(c + 1) * oh * ow];
        for a in 0..k {
            for b in 0..k {
                let f = filter[a * k + b];
                for i in 0..oh {
                    let row = &plane[(i * stride + a) * w + b..];
                    let dst = &mut target[i * ow..(i + 1) * ow];
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d += f * row[j * stride];
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (1, channels, oh, ow), x.device())
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

struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    fc_weight: Tensor,
    fc_bias: Tensor,
}

impl EfficientNetLite {
    /// EfficientNet-Lite0 from the folder holding its `.pth` file.
    fn load(dir: &Path) -> Result<Self, VisionError> {
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
        let fc_weight = get("_fc.weight")?;
        Ok(Self {
            stem: ConvBn::load(&w, "_conv_stem", "_bn0", 2, false)?,
            blocks,
            head: ConvBn::load(&w, "_conv_head", "_bn1", 1, false)?,
            fc_weight: fc_weight.t().map_err(compute)?,
            fc_bias: get("_fc.bias")?,
        })
    }

    /// Class logits `[1, classes]` of a preprocessed image.
    fn forward(&self, x: &Tensor) -> Result<Tensor, VisionError> {
        let mut x = relu6(&self.stem.forward(x)?)?;
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
        pooled
            .matmul(&self.fc_weight)
            .and_then(|l| l.broadcast_add(&self.fc_bias))
            .map_err(compute)
    }
}

/// One residual layer of a ResNet: bottleneck (1x1, 3x3, 1x1) or basic
/// (3x3, 3x3), with a projection shortcut where the shape changes.
struct ResidualLayer {
    shortcut: Option<ConvBn>,
    convs: Vec<ConvBn>,
}

/// A ResNet's convolutional body (stem, max pool, residual stages) with
/// batch norms folded in: the classifier's trunk and DETR's backbone.
pub(crate) struct ResNetBody {
    stem: ConvBn,
    stages: Vec<Vec<ResidualLayer>>,
}

impl ResNetBody {
    /// The Hugging Face `ResNetModel` layout under `prefix` (`resnet.` in
    /// `microsoft/resnet-50`): `embedder.embedder`, `encoder.stages.{s}
    /// .layers.{l}.{shortcut,layer.N}` with `convolution`/`normalization`.
    pub(crate) fn load_hugging_face(
        w: &HashMap<String, Tensor>,
        config: &serde_json::Value,
        prefix: &str,
    ) -> Result<Self, VisionError> {
        let conv = |name: &str, stride: usize| {
            ConvBn::load_with(
                w,
                &format!("{prefix}{name}.convolution"),
                &format!("{prefix}{name}.normalization"),
                stride,
                false,
                1e-5,
                false,
            )
        };
        let flag = |key: &str| config.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
        let bottleneck = config.get("layer_type").and_then(|v| v.as_str()) != Some("basic");
        let first_stage_stride = if flag("downsample_in_first_stage") {
            2
        } else {
            1
        };
        let stride_in_first_conv = flag("downsample_in_bottleneck") || !bottleneck;
        let has = |name: String| w.contains_key(&format!("{prefix}{name}.convolution.weight"));
        let mut stages = Vec::new();
        for s in 0.. {
            let stage = format!("encoder.stages.{s}");
            if !has(format!("{stage}.layers.0.layer.0")) {
                break;
            }
            let mut layers = Vec::new();
            for l in 0.. {
                let layer = format!("{stage}.layers.{l}");
                if !has(format!("{layer}.layer.0")) {
                    break;
                }
                let stride = match (l, s) {
                    (0, 0) => first_stage_stride,
                    (0, _) => 2,
                    _ => 1,
                };
                let shortcut = if has(format!("{layer}.shortcut")) {
                    Some(conv(&format!("{layer}.shortcut"), stride)?)
                } else {
                    None
                };
                let count = if bottleneck { 3 } else { 2 };
                let convs = (0..count)
                    .map(|c| {
                        let strided = if stride_in_first_conv { c == 0 } else { c == 1 };
                        conv(
                            &format!("{layer}.layer.{c}"),
                            if strided { stride } else { 1 },
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                layers.push(ResidualLayer { shortcut, convs });
            }
            stages.push(layers);
        }
        if stages.is_empty() {
            return Err(VisionError::Compute(format!(
                "no {prefix}encoder.stages in the weights"
            )));
        }
        Ok(Self {
            stem: conv("embedder.embedder", 2)?,
            stages,
        })
    }

    /// timm's (and torchvision's) ResNet layout under `prefix`: `conv1`/
    /// `bn1`, `layer{1..4}.{l}.conv{N}`/`bn{N}`, `downsample.{0,1}`, the
    /// stride on the 3x3 convolution; bottlenecks where `conv3` exists.
    pub(crate) fn load_timm(
        w: &HashMap<String, Tensor>,
        prefix: &str,
    ) -> Result<Self, VisionError> {
        let conv = |conv: String, bn: String, stride: usize| {
            ConvBn::load_with(
                w,
                &format!("{prefix}{conv}"),
                &format!("{prefix}{bn}"),
                stride,
                false,
                1e-5,
                false,
            )
        };
        let has = |name: String| w.contains_key(&format!("{prefix}{name}.weight"));
        let mut stages = Vec::new();
        for s in 1.. {
            if !has(format!("layer{s}.0.conv1")) {
                break;
            }
            let mut layers = Vec::new();
            for l in 0.. {
                let layer = format!("layer{s}.{l}");
                if !has(format!("{layer}.conv1")) {
                    break;
                }
                let stride = if l == 0 && s > 1 { 2 } else { 1 };
                let shortcut = if has(format!("{layer}.downsample.0")) {
                    Some(conv(
                        format!("{layer}.downsample.0"),
                        format!("{layer}.downsample.1"),
                        stride,
                    )?)
                } else {
                    None
                };
                let bottleneck = has(format!("{layer}.conv3"));
                let strided = if bottleneck { 2 } else { 1 };
                let convs = (1..=if bottleneck { 3 } else { 2 })
                    .map(|c| {
                        conv(
                            format!("{layer}.conv{c}"),
                            format!("{layer}.bn{c}"),
                            if c == strided { stride } else { 1 },
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                layers.push(ResidualLayer { shortcut, convs });
            }
            stages.push(layers);
        }
        if stages.is_empty() {
            return Err(VisionError::Compute(format!(
                "no {prefix}layer1 in the weights"
            )));
        }
        Ok(Self {
            stem: conv("conv1".into(), "bn1".into(), 2)?,
            stages,
        })
    }

    /// The last stage's feature map, `[1, C, H/32, W/32]`.
    pub(crate) fn features(&self, x: &Tensor) -> Result<Tensor, VisionError> {
        let relu = |t: Tensor| t.relu().map_err(compute);
        let x = relu(self.stem.forward(x)?)?;
        // 3x3 max pool, stride 2, padding 1: after a ReLU, zero padding
        // never wins the max, so it stands in for -inf.
        let mut x = x
            .pad_with_zeros(2, 1, 1)
            .and_then(|x| x.pad_with_zeros(3, 1, 1))
            .and_then(|x| x.max_pool2d_with_stride(3, 2))
            .map_err(compute)?;
        for layer in self.stages.iter().flatten() {
            let residual = match &layer.shortcut {
                Some(s) => s.forward(&x)?,
                None => x.clone(),
            };
            let mut h = x;
            let last = layer.convs.len() - 1;
            for (i, c) in layer.convs.iter().enumerate() {
                h = c.forward(&h)?;
                if i < last {
                    h = relu(h)?;
                }
            }
            x = relu((h + residual).map_err(compute)?)?;
        }
        Ok(x)
    }
}

/// ResNet for image classification in the Hugging Face layout
/// (`microsoft/resnet-50`: `resnet.` body, `classifier.1`).
struct ResNet {
    body: ResNetBody,
    fc_weight: Tensor,
    fc_bias: Tensor,
}

impl ResNet {
    fn load(w: &HashMap<String, Tensor>, config: &serde_json::Value) -> Result<Self, VisionError> {
        let get = |name: &str| {
            w.get(name)
                .cloned()
                .ok_or_else(|| VisionError::Compute(format!("the weights lack {name}")))
        };
        Ok(Self {
            body: ResNetBody::load_hugging_face(w, config, "resnet.")?,
            fc_weight: get("classifier.1.weight")?.t().map_err(compute)?,
            fc_bias: get("classifier.1.bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, VisionError> {
        self.body
            .features(x)?
            .mean((2, 3))
            .and_then(|p| p.matmul(&self.fc_weight))
            .and_then(|l| l.broadcast_add(&self.fc_bias))
            .map_err(compute)
    }
}

enum Network {
    EfficientNetLite(EfficientNetLite),
    ResNet(ResNet),
}

/// How a network's input was made at training time.
struct Preprocess {
    /// The shorter side is resized to this, then the centre is cropped.
    resize: u32,
    crop: u32,
    /// Per channel, in 0-255 units: (pixel - mean) / std.
    mean: [f32; 3],
    std: [f32; 3],
    filter: image::imageops::FilterType,
}

pub struct ImageClassifier {
    network: Network,
    preprocess: Preprocess,
    labels: Vec<String>,
}

impl ImageClassifier {
    /// A model folder: EfficientNet-Lite from a legacy `.pth` file, or a
    /// Hugging Face ResNet (`config.json` + `model.safetensors`, with its
    /// `preprocessor_config.json` when present).
    pub fn load(dir: &Path) -> Result<Self, VisionError> {
        if dir.join("model.safetensors").exists() {
            return Self::load_resnet(dir);
        }
        let network = EfficientNetLite::load(dir)?;
        let labels: Vec<String> = IMAGENET_LABELS.lines().map(str::to_string).collect();
        let classes = network.fc_weight.dim(1).map_err(compute)?;
        if classes != labels.len() {
            return Err(VisionError::Compute(format!(
                "the classifier has {classes} classes, not ImageNet's {}",
                labels.len()
            )));
        }
        Ok(Self {
            network: Network::EfficientNetLite(network),
            // Lite was trained on (x - 127) / 128.
            preprocess: Preprocess {
                resize: RESIZE,
                crop: INPUT,
                mean: [127.0; 3],
                std: [128.0; 3],
                filter: image::imageops::FilterType::Triangle,
            },
            labels,
        })
    }

    fn load_resnet(dir: &Path) -> Result<Self, VisionError> {
        let load = |reason: String| VisionError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let config = crate::hf::config_of_type(dir, "resnet").map_err(load)?;
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
            .map_err(|e| load(format!("model.safetensors: {e}")))?
            .into_iter()
            .map(|(k, v)| v.to_dtype(DType::F32).map(|v| (k, v)))
            .collect::<Result<HashMap<_, _>, _>>()
            .map_err(|e| load(e.to_string()))?;
        let network = ResNet::load(&tensors, &config)?;
        let classes = network.fc_weight.dim(1).map_err(compute)?;
        let labels = match config.get("id2label").and_then(|v| v.as_object()) {
            Some(map) => (0..classes)
                .map(|i| {
                    map.get(&i.to_string())
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .ok_or_else(|| load(format!("id2label has no class {i}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None if classes == IMAGENET_LABELS.lines().count() => {
                IMAGENET_LABELS.lines().map(str::to_string).collect()
            }
            None => return Err(load(format!("{classes} classes and no id2label"))),
        };
        // transformers' ConvNext/ResNet processor: the shorter side to
        // shortest_edge / crop_pct, centre crop shortest_edge, bicubic,
        // ImageNet mean and std unless the file says otherwise.
        let processor = crate::hf::json_file(dir, "preprocessor_config.json")
            .map_err(load)?
            .unwrap_or(serde_json::Value::Null);
        let crop = processor
            .pointer("/size/shortest_edge")
            .or_else(|| processor.pointer("/crop_size/height"))
            .and_then(|v| v.as_u64())
            .map_or(INPUT, |v| v as u32);
        let crop_pct = processor
            .get("crop_pct")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.875);
        Ok(Self {
            network: Network::ResNet(network),
            preprocess: Preprocess {
                resize: (f64::from(crop) / crop_pct).round() as u32,
                crop,
                mean: crate::hf::channel_values(&processor, "image_mean", [0.485, 0.456, 0.406]),
                std: crate::hf::channel_values(&processor, "image_std", [0.229, 0.224, 0.225]),
                filter: image::imageops::FilterType::CatmullRom,
            },
            labels,
        })
    }

    /// The `top` most likely labels of an encoded image, best first.
    pub fn classify(&self, image: &[u8], top: usize) -> Result<Vec<(String, f32)>, VisionError> {
        let x = preprocess(image, &self.preprocess)?;
        let logits = match &self.network {
            Network::EfficientNetLite(n) => n.forward(&x)?,
            Network::ResNet(n) => n.forward(&x)?,
        };
        let probabilities = candle_nn::ops::softmax_last_dim(&logits)
            .and_then(|p| p.squeeze(0))
            .and_then(|p| p.to_vec1::<f32>())
            .map_err(compute)?;
        let mut ranked: Vec<(usize, f32)> = probabilities.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(ranked
            .into_iter()
            .take(top)
            .filter_map(|(i, p)| self.labels.get(i).map(|l| (l.clone(), p)))
            .collect())
    }
}

/// Decodes and scales an image to the network's 1×3×crop×crop input.
fn preprocess(bytes: &[u8], how: &Preprocess) -> Result<Tensor, VisionError> {
    let decoded = decode_rgb(bytes, "image")?;
    let (w, h) = decoded.dimensions();
    let size = how.crop;
    let scale = how.resize as f32 / w.min(h) as f32;
    let (rw, rh) = (
        ((w as f32 * scale).round() as u32).max(size),
        ((h as f32 * scale).round() as u32).max(size),
    );
    let resized = image::imageops::resize(&decoded, rw, rh, how.filter);
    let (left, top) = ((rw - size) / 2, (rh - size) / 2);
    let crop = image::imageops::crop_imm(&resized, left, top, size, size).to_image();
    normalized(&crop, how.mean, how.std)
}

/// Decodes a PNG, JPEG or WebP image to RGB, refusing what is too large to
/// read or to decode (the errors name the input `field`).
pub(crate) fn decode_rgb(bytes: &[u8], field: &str) -> Result<image::RgbImage, VisionError> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(VisionError::BadImage(format!(
            "`{field}` is {} bytes; at most {MAX_IMAGE_BYTES} are read",
            bytes.len()
        )));
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| VisionError::BadImage(format!("`{field}`: {e}")))?;
    if reader.format().is_none() {
        return Err(VisionError::BadImage(format!(
            "`{field}` is not a PNG, JPEG or WebP image"
        )));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| VisionError::BadImage(format!("`{field}` cannot be read: {e}")))?;
    if u64::from(w) * u64::from(h) > MAX_PIXELS || w == 0 || h == 0 {
        return Err(VisionError::BadImage(format!(
            "`{field}` is {w}x{h} pixels; at most {MAX_PIXELS} pixels are decoded"
        )));
    }
    Ok(image::load_from_memory(bytes)
        .map_err(|e| VisionError::BadImage(format!("`{field}` cannot be decoded: {e}")))?
        .to_rgb8())
}

/// An RGB image as the network's `[1, 3, H, W]` input, per channel
/// `(pixel - mean) / std` in 0-255 units.
pub(crate) fn normalized(
    rgb: &image::RgbImage,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Tensor, VisionError> {
    let (w, h) = rgb.dimensions();
    let pixels: Vec<f32> = rgb
        .as_raw()
        .chunks_exact(3)
        .flat_map(|px| (0..3).map(move |c| (f32::from(px[c]) - mean[c]) / std[c]))
        .collect();
    Tensor::from_vec(pixels, (1, h as usize, w as usize, 3), &Device::Cpu)
        .and_then(|t| t.permute((0, 3, 1, 2)))
        .and_then(|t| t.contiguous())
        .map_err(compute)
}

/// A PNG of a colour pattern, different for each `shift`, for the image
/// models' tests.
#[cfg(test)]
pub(crate) fn test_png(width: u32, height: u32, shift: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            ((x * 7 + shift) % 256) as u8,
            ((y * 5) % 256) as u8,
            ((x + y * (shift + 1)) % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointwise_matches_candles_convolution() {
        let x = Tensor::randn(0f32, 1f32, (1, 6, 5, 7), &Device::Cpu).expect("x");
        let w = Tensor::randn(0f32, 1f32, (4, 6, 1, 1), &Device::Cpu).expect("w");
        let worst = (pointwise(&x, &w).expect("ours") - x.conv2d(&w, 0, 1, 1, 1).expect("candle"))
            .and_then(|d| d.abs()?.flatten_all()?.max(0))
            .and_then(|m| m.to_scalar::<f32>())
            .expect("diff");
        assert!(worst < 1e-4, "{worst}");
    }

    #[test]
    fn banded_matches_candles_convolution() {
        for (c, o, k, stride, h, w) in [
            (3, 8, 7, 2, 19, 23),
            (6, 4, 3, 1, 9, 11),
            (5, 7, 1, 2, 8, 9),
        ] {
            let x = Tensor::randn(0f32, 1f32, (1, c, h, w), &Device::Cpu).expect("x");
            let weight = Tensor::randn(0f32, 1f32, (o, c, k, k), &Device::Cpu).expect("w");
            let ours = banded(&x, &weight, stride).expect("ours");
            let theirs = x.conv2d(&weight, 0, stride, 1, 1).expect("candle");
            assert_eq!(ours.dims(), theirs.dims());
            let worst = (ours - theirs)
                .and_then(|d| d.abs()?.flatten_all()?.max(0))
                .and_then(|m| m.to_scalar::<f32>())
                .expect("diff");
            assert!(worst < 1e-3, "{c} {o} {k} {stride}: {worst}");
        }
    }

    #[test]
    fn depthwise_matches_candles_grouped_convolution() {
        for stride in [1, 2] {
            let x = Tensor::randn(0f32, 1f32, (1, 6, 11, 9), &Device::Cpu).expect("x");
            let w = Tensor::randn(0f32, 1f32, (6, 1, 3, 3), &Device::Cpu).expect("w");
            let ours = depthwise(&x, &w, stride).expect("ours");
            let theirs = x.conv2d(&w, 0, stride, 1, 6).expect("candle");
            assert_eq!(ours.dims(), theirs.dims());
            let worst = (ours - theirs)
                .and_then(|d| d.abs()?.flatten_all()?.max(0))
                .and_then(|m| m.to_scalar::<f32>())
                .expect("diff");
            assert!(worst < 1e-4, "{worst}");
        }
    }

    /// A tiny ResNet with random weights in the Hugging Face layout
    /// (`microsoft/resnet-50`'s names and config keys, 2 stages of
    /// bottlenecks, 4 classes), written where `ImageClassifier` reads it.
    fn write_tiny_resnet(dir: &Path) {
        let mut w: HashMap<String, Tensor> = HashMap::new();
        let mut conv_bn = |prefix: &str, cin: usize, cout: usize, k: usize| {
            let randn = |shape: &[usize], scale: f64| {
                Tensor::randn(0f32, 1f32, shape, &Device::Cpu)
                    .and_then(|t| t * scale)
                    .expect("randn")
            };
            let fan_in = (cin * k * k) as f64;
            w.insert(
                format!("{prefix}.convolution.weight"),
                randn(&[cout, cin, k, k], (2.0 / fan_in).sqrt()),
            );
            w.insert(
                format!("{prefix}.normalization.weight"),
                (randn(&[cout], 0.1) + 1.0).expect("gamma"),
            );
            w.insert(format!("{prefix}.normalization.bias"), randn(&[cout], 0.1));
            w.insert(
                format!("{prefix}.normalization.running_mean"),
                randn(&[cout], 0.1),
            );
            let var = Tensor::rand(0.5f32, 1.5f32, cout, &Device::Cpu).expect("var");
            w.insert(format!("{prefix}.normalization.running_var"), var);
        };
        conv_bn("resnet.embedder.embedder", 3, 8, 7);
        let (hidden, depths) = ([16usize, 32], [1usize, 2]);
        let mut cin = 8;
        for (s, (&cout, &depth)) in hidden.iter().zip(&depths).enumerate() {
            for l in 0..depth {
                let p = format!("resnet.encoder.stages.{s}.layers.{l}");
                let input = if l == 0 { cin } else { cout };
                if l == 0 {
                    conv_bn(&format!("{p}.shortcut"), input, cout, 1);
                }
                let reduced = cout / 4;
                conv_bn(&format!("{p}.layer.0"), input, reduced, 1);
                conv_bn(&format!("{p}.layer.1"), reduced, reduced, 3);
                conv_bn(&format!("{p}.layer.2"), reduced, cout, 1);
            }
            cin = cout;
        }
        w.insert(
            "classifier.1.weight".into(),
            Tensor::randn(0f32, 0.5, (4, 32), &Device::Cpu).expect("fc"),
        );
        w.insert(
            "classifier.1.bias".into(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).expect("bias"),
        );
        candle_core::safetensors::save(&w, dir.join("model.safetensors")).expect("save");
        let config = serde_json::json!({
            "model_type": "resnet", "architectures": ["ResNetForImageClassification"],
            "layer_type": "bottleneck", "embedding_size": 8, "hidden_sizes": hidden,
            "depths": depths, "downsample_in_first_stage": false,
            "id2label": {"0": "tabby, tabby cat", "1": "espresso", "2": "pug", "3": "volcano"},
        });
        std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
        let processor = serde_json::json!({
            "crop_pct": 0.875, "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225], "size": {"shortest_edge": 64},
        });
        std::fs::write(dir.join("preprocessor_config.json"), processor.to_string())
            .expect("processor");
    }

    #[test]
    fn hugging_face_resnet_loads_and_answers_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_resnet(dir.path());
        let model = ImageClassifier::load(dir.path()).expect("load");
        assert_eq!(model.preprocess.crop, 64);
        assert_eq!(model.preprocess.resize, 73);
        let image = test_png(120, 90, 0);
        let labels = model.classify(&image, 5).expect("classify");
        // Four classes: all of them, best first, a distribution.
        assert_eq!(labels.len(), 4);
        assert!(labels.windows(2).all(|w| w[0].1 >= w[1].1), "{labels:?}");
        let total: f32 = labels.iter().map(|l| l.1).sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        let mut names: Vec<&str> = labels.iter().map(|l| l.0.as_str()).collect();
        names.sort();
        assert_eq!(names, ["espresso", "pug", "tabby, tabby cat", "volcano"]);
        // The same image, the same answer; another image, another answer.
        assert_eq!(
            model.classify(&image, 2).expect("again"),
            labels[..2].to_vec()
        );
        assert_ne!(
            model.classify(&test_png(64, 200, 5), 4).expect("other"),
            labels
        );
    }

    #[test]
    fn a_resnet_folder_missing_weights_or_config_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_resnet(dir.path());
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).expect("read"))
                .expect("json");
        config["model_type"] = "vit".into();
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write");
        let err = ImageClassifier::load(dir.path())
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("model_type"));
        std::fs::remove_file(dir.path().join("config.json")).expect("rm");
        assert!(ImageClassifier::load(dir.path()).is_err());
    }
}
