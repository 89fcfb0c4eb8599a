//! Object detection with DETR (`facebook/detr-resnet-50`) on candle, from
//! the Hugging Face layout: `config.json` (`model_type: "detr"`, labels),
//! `model.safetensors` with a timm ResNet backbone (`use_timm_backbone`,
//! the hub checkpoint's names) or a Hugging Face one (`backbone_config`),
//! and `preprocessor_config.json`. The network is transformers'
//! `DetrForObjectDetection` at inference: frozen batch norms, a 1x1
//! projection, sine position embeddings, a post-norm encoder and decoder
//! over learned object queries, class and box heads; the answer is
//! `post_process_object_detection`'s, boxes in the image's pixels.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{LayerNorm, Linear, Module};

use crate::attention::{Activation, DecoderLayer, EncoderLayer, FeedForward, MultiHeadAttention};
use crate::vision::{ResNetBody, VisionError, decode_rgb, normalized};

/// Detections scoring at or under this are dropped, as the
/// `object-detection` pipeline does by default.
pub const THRESHOLD: f32 = 0.5;

fn compute(e: candle_core::Error) -> VisionError {
    VisionError::Compute(e.to_string())
}

/// One detected object: its label, the probability of that label, and its
/// box in the image's pixels (clamped to the image).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub label: String,
    pub score: f32,
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
}

/// DETR's attention: position embeddings are added to queries and keys,
/// never to values; one image, so `[tokens, d]` in and out.
fn attend(
    attention: &MultiHeadAttention,
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
) -> candle_core::Result<Tensor> {
    let keys = attention.keys(&key.unsqueeze(0)?)?;
    let values = attention.values(&value.unsqueeze(0)?)?;
    attention
        .attend(&query.unsqueeze(0)?, &keys, &values, None)?
        .squeeze(0)
}

/// How DETR's image processor scales an image: the shorter side to
/// `shortest`, unless the longer would then pass `longest`; bilinear.
struct Resize {
    shortest: u32,
    longest: Option<u32>,
    mean: [f32; 3],
    std: [f32; 3],
}

impl Resize {
    /// transformers' `get_size_with_aspect_ratio`, integer truncation and
    /// all, so boxes land where the reference puts them.
    fn output_size(&self, width: u32, height: u32) -> (u32, u32) {
        let (h, w) = (f64::from(height), f64::from(width));
        let mut size = f64::from(self.shortest);
        let mut raw = None;
        if let Some(max) = self.longest.map(f64::from) {
            let (small, large) = (h.min(w), h.max(w));
            if large / small * size > max {
                let r = max * small / large;
                raw = Some(r);
                size = r.round();
            }
        }
        if (height <= width && h == size) || (width <= height && w == size) {
            return (width, height);
        }
        let base = raw.unwrap_or(size);
        if width < height {
            (size as u32, (base * h / w) as u32)
        } else {
            ((base * w / h) as u32, size as u32)
        }
    }
}

pub struct ObjectDetector {
    backbone: ResNetBody,
    projection: Linear,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    decoder_norm: LayerNorm,
    queries: Tensor,
    classifier: Linear,
    bbox: [Linear; 3],
    labels: Vec<String>,
    resize: Resize,
}

impl ObjectDetector {
    pub fn load(dir: &Path) -> Result<Self, VisionError> {
        let load = |reason: String| VisionError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let config = crate::hf::config_of_type(dir, "detr").map_err(load)?;
        let w = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
            .map_err(|e| load(format!("model.safetensors: {e}")))?
            .into_iter()
            .map(|(k, v)| v.to_dtype(DType::F32).map(|v| (k, v)))
            .collect::<Result<HashMap<_, _>, _>>()
            .map_err(|e| load(e.to_string()))?;
        let int = |key: &str, default: usize| {
            config
                .get(key)
                .and_then(|v| v.as_u64())
                .map_or(default, |v| v as usize)
        };
        let get = |name: &str| {
            w.get(name)
                .cloned()
                .ok_or_else(|| load(format!("the weights lack {name}")))
        };
        let linear = |name: &str| -> Result<Linear, VisionError> {
            Ok(Linear::new(
                get(&format!("{name}.weight"))?,
                Some(get(&format!("{name}.bias"))?),
            ))
        };
        let norm = |name: &str| -> Result<LayerNorm, VisionError> {
            Ok(LayerNorm::new(
                get(&format!("{name}.weight"))?,
                get(&format!("{name}.bias"))?,
                1e-5,
            ))
        };
        let attention = |name: &str, heads: usize| -> Result<MultiHeadAttention, VisionError> {
            Ok(MultiHeadAttention::from_projections(
                [
                    linear(&format!("{name}.q_proj"))?,
                    linear(&format!("{name}.k_proj"))?,
                    linear(&format!("{name}.v_proj"))?,
                    linear(&format!("{name}.out_proj"))?,
                ],
                heads,
            ))
        };
        let feed_forward = |name: &str| -> Result<FeedForward, VisionError> {
            Ok(FeedForward {
                fc1: linear(&format!("{name}.fc1"))?,
                fc2: linear(&format!("{name}.fc2"))?,
                activation: Activation::Relu,
            })
        };

        const TIMM: &str = "model.backbone.conv_encoder.model.";
        let backbone = if w.contains_key(&format!("{TIMM}conv1.weight")) {
            ResNetBody::load_timm(&w, TIMM)?
        } else {
            let backbone_config = config
                .get("backbone_config")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            ResNetBody::load_hugging_face(&w, &backbone_config, TIMM)?
        };
        let d_model = int("d_model", 256);
        let (encoder_heads, decoder_heads) = (
            int("encoder_attention_heads", 8),
            int("decoder_attention_heads", 8),
        );
        if encoder_heads == 0
            || decoder_heads == 0
            || d_model % encoder_heads != 0
            || d_model % decoder_heads != 0
        {
            return Err(load(format!(
                "d_model {d_model} does not split into the attention heads"
            )));
        }
        let projection = get("model.input_projection.weight")?;
        let (out, channels) = (
            projection.dim(0).map_err(compute)?,
            projection.dim(1).map_err(compute)?,
        );
        if out != d_model {
            return Err(load(format!(
                "the input projection gives {out} channels, config.json says d_model {d_model}"
            )));
        }
        let projection = Linear::new(
            projection.reshape((out, channels)).map_err(compute)?,
            Some(get("model.input_projection.bias")?),
        );
        let encoder = (0..int("encoder_layers", 6))
            .map(|i| {
                let p = format!("model.encoder.layers.{i}");
                Ok(EncoderLayer {
                    attention: attention(&format!("{p}.self_attn"), encoder_heads)?,
                    attention_norm: norm(&format!("{p}.self_attn_layer_norm"))?,
                    feed_forward: feed_forward(&p)?,
                    norm: norm(&format!("{p}.final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>, VisionError>>()?;
        let decoder = (0..int("decoder_layers", 6))
            .map(|i| {
                let p = format!("model.decoder.layers.{i}");
                Ok(DecoderLayer {
                    attention: attention(&format!("{p}.self_attn"), decoder_heads)?,
                    attention_norm: norm(&format!("{p}.self_attn_layer_norm"))?,
                    cross: attention(&format!("{p}.encoder_attn"), decoder_heads)?,
                    cross_norm: norm(&format!("{p}.encoder_attn_layer_norm"))?,
                    feed_forward: feed_forward(&p)?,
                    norm: norm(&format!("{p}.final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>, VisionError>>()?;
        let classifier = linear("class_labels_classifier")?;
        // The last class is "no object".
        let classes = classifier
            .weight()
            .dim(0)
            .map_err(compute)?
            .saturating_sub(1);
        let id2label = config.get("id2label").and_then(|v| v.as_object());
        let labels = (0..classes)
            .map(|i| {
                id2label
                    .and_then(|m| m.get(&i.to_string()))
                    .and_then(|v| v.as_str())
                    .map_or_else(|| format!("LABEL_{i}"), str::to_string)
            })
            .collect();

        let processor = crate::hf::json_file(dir, "preprocessor_config.json")
            .map_err(load)?
            .unwrap_or(serde_json::Value::Null);
        let number = |pointer: &str| processor.pointer(pointer).and_then(|v| v.as_u64());
        // Newer files say {size: {shortest_edge, longest_edge}}, older
        // ones {size: 800, max_size: 1333}.
        let resize = Resize {
            shortest: number("/size/shortest_edge")
                .or_else(|| number("/size"))
                .map_or(800, |v| v as u32),
            longest: number("/size/longest_edge")
                .or_else(|| number("/max_size"))
                .or(Some(1333))
                .map(|v| v as u32),
            mean: crate::hf::channel_values(&processor, "image_mean", [0.485, 0.456, 0.406]),
            std: crate::hf::channel_values(&processor, "image_std", [0.229, 0.224, 0.225]),
        };
        Ok(Self {
            backbone,
            projection,
            encoder,
            decoder,
            decoder_norm: norm("model.decoder.layernorm")?,
            queries: get("model.query_position_embeddings.weight")?,
            classifier,
            bbox: [
                linear("bbox_predictor.layers.0")?,
                linear("bbox_predictor.layers.1")?,
                linear("bbox_predictor.layers.2")?,
            ],
            labels,
            resize,
        })
    }

    /// The objects in an encoded image scoring over `threshold`, best
    /// first.
    pub fn detect(&self, image: &[u8], threshold: f32) -> Result<Vec<Detection>, VisionError> {
        let rgb = decode_rgb(image, "image")?;
        let (width, height) = rgb.dimensions();
        let (rw, rh) = self.resize.output_size(width, height);
        let resized = image::imageops::resize(
            &rgb,
            rw.max(1),
            rh.max(1),
            image::imageops::FilterType::Triangle,
        );
        let x = normalized(&resized, self.resize.mean, self.resize.std)?;
        let (logits, boxes) = self.forward(&x).map_err(compute)?;
        let probabilities = candle_nn::ops::softmax_last_dim(&logits)
            .and_then(|p| p.to_vec2::<f32>())
            .map_err(compute)?;
        let boxes = boxes.to_vec2::<f32>().map_err(compute)?;
        let (fw, fh) = (width as f32, height as f32);
        let mut found: Vec<Detection> = probabilities
            .iter()
            .zip(&boxes)
            .filter_map(|(p, b)| {
                let (class, &score) = p[..self.labels.len()]
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))?;
                if score <= threshold {
                    return None;
                }
                let (cx, cy, bw, bh) = (b[0], b[1], b[2], b[3]);
                let x = |v: f32| (v * fw).clamp(0.0, fw);
                let y = |v: f32| (v * fh).clamp(0.0, fh);
                Some(Detection {
                    label: self.labels[class].clone(),
                    score,
                    xmin: x(cx - bw / 2.0),
                    ymin: y(cy - bh / 2.0),
                    xmax: x(cx + bw / 2.0),
                    ymax: y(cy + bh / 2.0),
                })
            })
            .collect();
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(found)
    }

    /// Class logits `[queries, classes + 1]` and boxes `[queries, 4]`
    /// (centre x, centre y, width, height, as fractions of the image).
    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let features = self
            .backbone
            .features(x)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (_, channels, h, w) = features.dims4()?;
        let tokens = features.reshape((channels, h * w))?.t()?;
        let hidden = self.projection.forward(&tokens)?;
        let d = hidden.dim(1)?;
        let position = sine_positions(h, w, d)?;

        // One image: the encoder layers take a batch of one.
        let mut hidden = hidden.unsqueeze(0)?;
        let batched_position = position.unsqueeze(0)?;
        for layer in &self.encoder {
            hidden = layer.forward(&hidden, Some(&batched_position))?;
        }
        let memory = hidden.squeeze(0)?;
        let memory_keys = (&memory + &position)?;

        let queries = &self.queries;
        let mut hidden = queries.zeros_like()?;
        for layer in &self.decoder {
            let with_query = (&hidden + queries)?;
            let attended = attend(&layer.attention, &with_query, &with_query, &hidden)?;
            hidden = layer.attention_norm.forward(&(hidden + attended)?)?;
            let crossed = attend(&layer.cross, &(&hidden + queries)?, &memory_keys, &memory)?;
            hidden = layer.cross_norm.forward(&(hidden + crossed)?)?;
            let fed = layer.feed_forward.forward(&hidden)?;
            hidden = layer.norm.forward(&(hidden + fed)?)?;
        }
        let hidden = self.decoder_norm.forward(&hidden)?;
        let logits = self.classifier.forward(&hidden)?;
        let boxes = self.bbox[0].forward(&hidden)?.relu()?;
        let boxes = self.bbox[1].forward(&boxes)?.relu()?;
        let boxes = candle_nn::ops::sigmoid(&self.bbox[2].forward(&boxes)?)?;
        Ok((logits, boxes))
    }
}

/// DETR's normalised sine position embedding of an `h x w` map with no
/// padding, `[h w, d]`: the first half encodes the row, the second the
/// column; channel `2k` is the sine and `2k + 1` the cosine of
/// `pos / 10000^(2k / (d/2))`, positions running (i + 1) / n * 2 pi.
fn sine_positions(h: usize, w: usize, d: usize) -> candle_core::Result<Tensor> {
    let half = d / 2;
    let encode = |i: usize, n: usize, out: &mut Vec<f32>| {
        let pos = (i + 1) as f64 / (n as f64 + 1e-6) * std::f64::consts::TAU;
        for c in 0..half {
            let t = 10000f64.powf((2 * (c / 2)) as f64 / half as f64);
            let v = pos / t;
            out.push(if c % 2 == 0 { v.sin() } else { v.cos() } as f32);
        }
    };
    let mut data = Vec::with_capacity(h * w * d);
    for i in 0..h {
        for j in 0..w {
            encode(i, h, &mut data);
            encode(j, w, &mut data);
        }
    }
    Tensor::from_vec(data, (h * w, d), &Device::Cpu)
}

/// Writes a tiny DETR with random weights in the hub checkpoint's layout
/// (timm ResNet backbone names, `config.json`, `preprocessor_config.json`)
/// to `dir`: three COCO-like labels, the classifier biased to "cat" so that
/// detections pass the threshold. For tests of the whole path: no genuine
/// DETR weights ship in a registry package.
pub fn write_tiny_model(dir: &Path) -> Result<(), VisionError> {
    let fail = |e: &dyn std::fmt::Display| VisionError::Load {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let (d, ffn, queries, layers) = (16usize, 32usize, 12usize, 2usize);
    let mut w = TinyWeights::default();
    let backbone = "model.backbone.conv_encoder.model";
    w.conv_bn(
        &format!("{backbone}.conv1"),
        &format!("{backbone}.bn1"),
        3,
        8,
        7,
    )?;
    // Two stages of one bottleneck each: 8 -> 16 -> 32 channels.
    let mut cin = 8;
    for (s, cout) in [(1usize, 16usize), (2, 32)] {
        let p = format!("{backbone}.layer{s}.0");
        w.conv_bn(
            &format!("{p}.downsample.0"),
            &format!("{p}.downsample.1"),
            cin,
            cout,
            1,
        )?;
        let mid = cout / 4;
        w.conv_bn(&format!("{p}.conv1"), &format!("{p}.bn1"), cin, mid, 1)?;
        w.conv_bn(&format!("{p}.conv2"), &format!("{p}.bn2"), mid, mid, 3)?;
        w.conv_bn(&format!("{p}.conv3"), &format!("{p}.bn3"), mid, cout, 1)?;
        cin = cout;
    }
    let mut norms = vec!["model.decoder.layernorm".to_string()];
    for i in 0..layers {
        let p = format!("model.encoder.layers.{i}");
        w.attention(&format!("{p}.self_attn"), d)?;
        w.linear(&format!("{p}.fc1"), ffn, d)?;
        w.linear(&format!("{p}.fc2"), d, ffn)?;
        norms.extend([
            format!("{p}.self_attn_layer_norm"),
            format!("{p}.final_layer_norm"),
        ]);
        let p = format!("model.decoder.layers.{i}");
        w.attention(&format!("{p}.self_attn"), d)?;
        w.attention(&format!("{p}.encoder_attn"), d)?;
        w.linear(&format!("{p}.fc1"), ffn, d)?;
        w.linear(&format!("{p}.fc2"), d, ffn)?;
        norms.extend([
            format!("{p}.self_attn_layer_norm"),
            format!("{p}.encoder_attn_layer_norm"),
            format!("{p}.final_layer_norm"),
        ]);
    }
    for n in norms {
        w.put(&format!("{n}.weight"), &[d], 0.1, 1.0)?;
        w.put(&format!("{n}.bias"), &[d], 0.1, 0.0)?;
    }
    w.linear("bbox_predictor.layers.0", d, d)?;
    w.linear("bbox_predictor.layers.1", d, d)?;
    w.linear("bbox_predictor.layers.2", 4, d)?;
    w.linear("class_labels_classifier", 4, d)?;
    w.put(
        "model.input_projection.weight",
        &[d, cin, 1, 1],
        (1.0 / cin as f64).sqrt(),
        0.0,
    )?;
    w.put("model.input_projection.bias", &[d], 0.02, 0.0)?;
    w.put(
        "model.query_position_embeddings.weight",
        &[queries, d],
        1.0,
        0.0,
    )?;
    let mut w = w.0;
    // Classes: N/A, cat, dog, then "no object". "cat" wins every query.
    let bias = Tensor::new(&[0f32, 6.0, 1.0, 0.0], &Device::Cpu).map_err(compute)?;
    w.insert("class_labels_classifier.bias".into(), bias);
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).map_err(|e| fail(&e))?;
    let config = serde_json::json!({
        "model_type": "detr", "architectures": ["DetrForObjectDetection"],
        "use_timm_backbone": true, "backbone": "resnet50", "num_channels": 3,
        "d_model": d, "encoder_layers": layers, "decoder_layers": layers,
        "encoder_attention_heads": 2, "decoder_attention_heads": 2,
        "encoder_ffn_dim": ffn, "decoder_ffn_dim": ffn, "num_queries": queries,
        "activation_function": "relu", "position_embedding_type": "sine", "dilation": false,
        "id2label": {"0": "N/A", "1": "cat", "2": "dog"},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).map_err(|e| fail(&e))?;
    let processor = serde_json::json!({
        "do_normalize": true, "do_resize": true, "do_rescale": true, "do_pad": true,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "resample": 2, "size": {"shortest_edge": 96, "longest_edge": 160},
    });
    std::fs::write(dir.join("preprocessor_config.json"), processor.to_string())
        .map_err(|e| fail(&e))?;
    Ok(())
}

/// Random tensors under their checkpoint names, for [`write_tiny_model`].
#[derive(Default)]
struct TinyWeights(HashMap<String, Tensor>);

impl TinyWeights {
    fn put(
        &mut self,
        name: &str,
        shape: &[usize],
        scale: f64,
        offset: f64,
    ) -> Result<(), VisionError> {
        let t = Tensor::randn(0f32, 1f32, shape, &Device::Cpu)
            .and_then(|t| t.affine(scale, offset))
            .map_err(compute)?;
        self.0.insert(name.to_string(), t);
        Ok(())
    }

    /// A convolution (He-scaled) and its frozen batch norm.
    fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        k: usize,
    ) -> Result<(), VisionError> {
        let scale = (2.0 / (cin * k * k) as f64).sqrt();
        self.put(&format!("{conv}.weight"), &[cout, cin, k, k], scale, 0.0)?;
        self.put(&format!("{bn}.weight"), &[cout], 0.1, 1.0)?;
        self.put(&format!("{bn}.bias"), &[cout], 0.1, 0.0)?;
        self.put(&format!("{bn}.running_mean"), &[cout], 0.1, 0.0)?;
        let var = Tensor::rand(0.5f32, 1.5f32, cout, &Device::Cpu).map_err(compute)?;
        self.0.insert(format!("{bn}.running_var"), var);
        Ok(())
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<(), VisionError> {
        let scale = (1.0 / inp as f64).sqrt();
        self.put(&format!("{name}.weight"), &[out, inp], scale, 0.0)?;
        self.put(&format!("{name}.bias"), &[out], 0.02, 0.0)
    }

    fn attention(&mut self, name: &str, d: usize) -> Result<(), VisionError> {
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            self.linear(&format!("{name}.{proj}"), d, d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::test_png as png;

    #[test]
    fn resizing_follows_the_image_processor() {
        let r = Resize {
            shortest: 800,
            longest: Some(1333),
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        // transformers' answers (width, height): landscape, portrait, a
        // panorama capped by the longer side, and already the right size.
        assert_eq!(r.output_size(640, 480), (1066, 800));
        assert_eq!(r.output_size(480, 640), (800, 1066));
        assert_eq!(r.output_size(2000, 500), (1333, 333));
        assert_eq!(r.output_size(1000, 800), (1000, 800));
    }

    #[test]
    fn sine_positions_match_detr() {
        let p = sine_positions(2, 3, 8)
            .and_then(|t| t.to_vec2::<f32>())
            .expect("positions");
        // Row 1 of 2 (y = 2/2 * 2pi), column 0 of 3 (x = 1/3 * 2pi).
        let (y, x) = (std::f64::consts::TAU, std::f64::consts::TAU / 3.0);
        let expect = [
            y.sin(),
            y.cos(),
            (y / 100.0).sin(),
            (y / 100.0).cos(),
            x.sin(),
            x.cos(),
            (x / 100.0).sin(),
            (x / 100.0).cos(),
        ];
        for (got, want) in p[3].iter().zip(expect) {
            assert!((f64::from(*got) - want).abs() < 1e-4, "{:?}", p[3]);
        }
    }

    #[test]
    fn a_tiny_detr_answers_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let model = ObjectDetector::load(dir.path()).expect("load");
        let image = png(150, 100, 3);
        let found = model.detect(&image, THRESHOLD).expect("detect");
        // Every query is confident about "cat" in this model.
        assert_eq!(found.len(), 12, "{found:?}");
        for d in &found {
            assert_eq!(d.label, "cat");
            assert!(d.score > THRESHOLD && d.score <= 1.0);
            assert!(
                0.0 <= d.xmin && d.xmin <= d.xmax && d.xmax <= 150.0,
                "{d:?}"
            );
            assert!(
                0.0 <= d.ymin && d.ymin <= d.ymax && d.ymax <= 100.0,
                "{d:?}"
            );
        }
        assert!(found.windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(model.detect(&image, THRESHOLD).expect("again"), found);
        assert_ne!(
            model.detect(&png(90, 120, 11), THRESHOLD).expect("other"),
            found
        );
        assert!(model.detect(&image, 0.9999).expect("strict").len() < found.len());
    }

    #[test]
    fn a_folder_that_is_not_detr_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path()).expect("write");
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        config["model_type"] = "yolos".into();
        std::fs::write(&path, config.to_string()).expect("write");
        let err = ObjectDetector::load(dir.path())
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("model_type"));
        std::fs::remove_file(&path).expect("rm");
        assert!(ObjectDetector::load(dir.path()).is_err());
    }
}
