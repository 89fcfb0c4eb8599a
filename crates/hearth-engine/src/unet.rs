//! The Stable Diffusion UNet assembled from candle's public blocks, with
//! SDXL's added conditioning (`addition_embed_type: "text_time"`): the
//! pooled text embedding and six size/crop numbers are projected and added
//! to the timestep embedding before any block reads it.
//!
//! candle's `UNet2DConditionModel` has no such input (its forward takes a
//! timestep only), so the composition is here; the blocks, resnets and
//! transformers are candle's, built with the same arguments as candle
//! builds them for SD 1.x.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    CrossAttnDownBlock2D, CrossAttnDownBlock2DConfig, CrossAttnUpBlock2D, CrossAttnUpBlock2DConfig,
    DownBlock2D, DownBlock2DConfig, UNetMidBlock2DCrossAttn, UNetMidBlock2DCrossAttnConfig,
    UpBlock2D, UpBlock2DConfig,
};

/// SDXL's added conditioning: diffusers' `add_time_proj` (sinusoids of
/// `time_dim` per number) and `add_embedding` (an MLP from the pooled text
/// and the projected numbers to the time embedding's width).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextTimeConfig {
    /// `addition_time_embed_dim` (256 for SDXL).
    pub time_dim: usize,
    /// `projection_class_embeddings_input_dim` (2816 for SDXL: 1280 pooled
    /// text + 6 x 256).
    pub input_dim: usize,
}

/// What SDXL's UNet reads beside the latents and the text: one row per
/// latent row.
pub(crate) struct AddedConditions {
    /// The second text encoder's pooled, projected prompt: `[batch, width]`.
    pub text_embeds: Tensor,
    /// Original size, crop corner and target size: `[batch, 6]`.
    pub time_ids: Tensor,
}

struct TextTime {
    time_proj: Timesteps,
    embedding: TimestepEmbedding,
    config: TextTimeConfig,
}

enum Down {
    Basic(DownBlock2D),
    CrossAttn(CrossAttnDownBlock2D),
}

enum Up {
    Basic(UpBlock2D),
    CrossAttn(CrossAttnUpBlock2D),
}

pub(crate) struct UNet {
    conv_in: candle_nn::Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    text_time: Option<TextTime>,
    down: Vec<Down>,
    mid: UNetMidBlock2DCrossAttn,
    up: Vec<Up>,
    conv_norm_out: candle_nn::GroupNorm,
    conv_out: candle_nn::Conv2d,
    config: UNet2DConditionModelConfig,
}

impl UNet {
    pub(crate) fn new(
        vs: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        config: &UNet2DConditionModelConfig,
        text_time: Option<TextTimeConfig>,
    ) -> candle_core::Result<Self> {
        let blocks = &config.blocks;
        let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
            candle_core::bail!("the UNet has no blocks");
        };
        let n = blocks.len();
        let base = first.out_channels;
        let time_dim = base * 4;
        let conv = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = candle_nn::conv2d(in_channels, base, 3, conv, vs.pp("conv_in"))?;
        let time_proj = Timesteps::new(base, config.flip_sin_to_cos, config.freq_shift);
        let time_embedding = TimestepEmbedding::new(vs.pp("time_embedding"), base, time_dim)?;
        let text_time = match text_time {
            Some(c) => Some(TextTime {
                time_proj: Timesteps::new(c.time_dim, config.flip_sin_to_cos, config.freq_shift),
                embedding: TimestepEmbedding::new(vs.pp("add_embedding"), c.input_dim, time_dim)?,
                config: c,
            }),
            None => None,
        };

        let down = (0..n)
            .map(|i| {
                let BlockConfig {
                    out_channels,
                    use_cross_attn,
                    attention_head_dim,
                } = blocks[i];
                let in_channels = if i > 0 {
                    blocks[i - 1].out_channels
                } else {
                    base
                };
                let plain = DownBlock2DConfig {
                    num_layers: config.layers_per_block,
                    resnet_eps: config.norm_eps,
                    resnet_groups: config.norm_num_groups,
                    add_downsample: i < n - 1,
                    downsample_padding: config.downsample_padding,
                    ..Default::default()
                };
                let vs = vs.pp("down_blocks").pp(i.to_string());
                Ok(match use_cross_attn {
                    Some(transformer_layers_per_block) => {
                        Down::CrossAttn(CrossAttnDownBlock2D::new(
                            vs,
                            in_channels,
                            out_channels,
                            Some(time_dim),
                            false,
                            CrossAttnDownBlock2DConfig {
                                downblock: plain,
                                attn_num_head_channels: attention_head_dim,
                                cross_attention_dim: config.cross_attention_dim,
                                sliced_attention_size: None,
                                use_linear_projection: config.use_linear_projection,
                                transformer_layers_per_block,
                            },
                        )?)
                    }
                    None => Down::Basic(DownBlock2D::new(
                        vs,
                        in_channels,
                        out_channels,
                        Some(time_dim),
                        plain,
                    )?),
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;

        // diffusers gives the middle block the last block's transformer depth.
        let mid = UNetMidBlock2DCrossAttn::new(
            vs.pp("mid_block"),
            last.out_channels,
            Some(time_dim),
            false,
            UNetMidBlock2DCrossAttnConfig {
                resnet_eps: config.norm_eps,
                output_scale_factor: config.mid_block_scale_factor,
                cross_attn_dim: config.cross_attention_dim,
                attn_num_head_channels: last.attention_head_dim,
                resnet_groups: Some(config.norm_num_groups),
                use_linear_projection: config.use_linear_projection,
                transformer_layers_per_block: last.use_cross_attn.unwrap_or(1),
                ..Default::default()
            },
        )?;

        let up = (0..n)
            .map(|i| {
                let BlockConfig {
                    out_channels,
                    use_cross_attn,
                    attention_head_dim,
                } = blocks[n - 1 - i];
                let previous = if i > 0 {
                    blocks[n - i].out_channels
                } else {
                    last.out_channels
                };
                let skip = blocks[if i == n - 1 { 0 } else { n - i - 2 }].out_channels;
                let plain = UpBlock2DConfig {
                    num_layers: config.layers_per_block + 1,
                    resnet_eps: config.norm_eps,
                    resnet_groups: config.norm_num_groups,
                    add_upsample: i < n - 1,
                    ..Default::default()
                };
                let vs = vs.pp("up_blocks").pp(i.to_string());
                Ok(match use_cross_attn {
                    Some(transformer_layers_per_block) => Up::CrossAttn(CrossAttnUpBlock2D::new(
                        vs,
                        skip,
                        previous,
                        out_channels,
                        Some(time_dim),
                        false,
                        CrossAttnUpBlock2DConfig {
                            upblock: plain,
                            attn_num_head_channels: attention_head_dim,
                            cross_attention_dim: config.cross_attention_dim,
                            sliced_attention_size: None,
                            use_linear_projection: config.use_linear_projection,
                            transformer_layers_per_block,
                        },
                    )?),
                    None => Up::Basic(UpBlock2D::new(
                        vs,
                        skip,
                        previous,
                        out_channels,
                        Some(time_dim),
                        plain,
                    )?),
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;

        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            text_time,
            down,
            mid,
            up,
            conv_norm_out: candle_nn::group_norm(
                config.norm_num_groups,
                base,
                config.norm_eps,
                vs.pp("conv_norm_out"),
            )?,
            conv_out: candle_nn::conv2d(base, out_channels, 3, conv, vs.pp("conv_out"))?,
            config: config.clone(),
        })
    }

    /// The predicted noise (or velocity) for `xs` at `timestep`, attending
    /// to `context`.
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&AddedConditions>,
    ) -> candle_core::Result<Tensor> {
        let (batch, _, height, width) = xs.dims4()?;
        let n = self.config.blocks.len();
        let factor = 1usize << (n - 1);
        let odd_size = height % factor != 0 || width % factor != 0;
        let xs = if self.config.center_input_sample {
            ((xs * 2.0)? - 1.0)?
        } else {
            xs.clone()
        };
        let emb = (Tensor::ones(batch, xs.dtype(), xs.device())? * timestep)?;
        let mut emb = self
            .time_embedding
            .forward(&self.time_proj.forward(&emb)?)?;
        match (&self.text_time, added) {
            (Some(t), Some(added)) => {
                let numbers = added.time_ids.dim(1)?;
                let times = t
                    .time_proj
                    .forward(&added.time_ids.flatten_all()?)?
                    .reshape((batch, numbers * t.config.time_dim))?;
                let input = Tensor::cat(&[&added.text_embeds, &times], 1)?;
                if input.dim(1)? != t.config.input_dim {
                    candle_core::bail!(
                        "the added conditions are {} wide, the UNet's add_embedding takes {}",
                        input.dim(1)?,
                        t.config.input_dim
                    );
                }
                emb = (emb + t.embedding.forward(&input)?)?;
            }
            (Some(_), None) => candle_core::bail!("this UNet needs the pooled text and time ids"),
            (None, _) => {}
        }

        let xs = self.conv_in.forward(&xs)?;
        let mut skips = vec![xs.clone()];
        let mut xs = xs;
        for block in &self.down {
            let (out, residuals) = match block {
                Down::Basic(b) => b.forward(&xs, Some(&emb))?,
                Down::CrossAttn(b) => b.forward(&xs, Some(&emb), Some(context))?,
            };
            skips.extend(residuals);
            xs = out;
        }
        let mut xs = self.mid.forward(&xs, Some(&emb), Some(context))?;
        for (i, block) in self.up.iter().enumerate() {
            let resnets = match block {
                Up::Basic(b) => b.resnets.len(),
                Up::CrossAttn(b) => b.upblock.resnets.len(),
            };
            let residuals = skips.split_off(skips.len().saturating_sub(resnets));
            // Sizes that do not halve evenly: upsample to the skip's size.
            let upsample_size = match skips.last() {
                Some(skip) if i < n - 1 && odd_size => {
                    let (_, _, h, w) = skip.dims4()?;
                    Some((h, w))
                }
                _ => None,
            };
            xs = match block {
                Up::Basic(b) => b.forward(&xs, &residuals, Some(&emb), upsample_size)?,
                Up::CrossAttn(b) => {
                    b.forward(&xs, &residuals, Some(&emb), upsample_size, Some(context))?
                }
            };
        }
        let xs = candle_nn::ops::silu(&self.conv_norm_out.forward(&xs)?)?;
        self.conv_out.forward(&xs)
    }
}
