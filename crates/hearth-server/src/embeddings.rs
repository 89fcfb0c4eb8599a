//! Encoder tasks: reranking and classification on the run endpoint, and text embeddings on both surfaces: the Workers AI run endpoint
//! (`{shape, data, pooling}` in the envelope) and OpenAI's `/v1/embeddings`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hearth_engine::Pooling;
use hearth_runtime::app::Resolved;
use hearth_types::ApiError;
use hearth_types::embeddings::{
    ClassificationInput, ContextEmbeddingsOutput, EmbeddingsForm, EmbeddingsInput,
    EmbeddingsOutput, EncodingFormat, LabelScore, OpenAiEmbeddingsRequest, PoolingChoice,
    RankedContext, RerankInput, RerankOutput, ValidEmbeddings,
};
use serde_json::{Value, json};

use crate::error::Failure;
use crate::metering::Admission;
use crate::{AppState, body, enveloped, tag_response};

fn pooling(choice: PoolingChoice) -> Pooling {
    match choice {
        PoolingChoice::Mean => Pooling::Mean,
        PoolingChoice::Cls => Pooling::Cls,
    }
}

/// `POST /ai/run/{embedding model}`.
pub async fn run(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    admission: &Admission,
) -> Result<Response, Failure> {
    let input: EmbeddingsInput = body::parse_json(bytes)?;
    let valid = input.validate()?;
    let (result, tokens, resolved) = answer(state, model, valid).await?;
    admission.charge(tokens, 0);
    Ok(enveloped(result, &resolved))
}

/// The `result` of a validated embeddings request in its form (`text`,
/// bge-m3's `contexts`, or `contexts` ranked against `query`), the tokens
/// it read, and the model that served it. Shared with the batch queue.
pub(crate) async fn answer(
    state: &AppState,
    model: &str,
    valid: ValidEmbeddings,
) -> Result<(Value, u64, Resolved), ApiError> {
    if valid.form != EmbeddingsForm::Text && !model.ends_with("/bge-m3") {
        return Err(ApiError::invalid_input(format!(
            "`contexts` and `query` are accepted by @cf/baai/bge-m3 only, not {model}"
        )));
    }
    // EmbeddingGemma's schema has no pooling: it always mean-pools, and its
    // output carries no `pooling` field.
    let fixed_pooling = model.ends_with("/embeddinggemma-300m");
    if fixed_pooling && valid.pooling.is_some() {
        return Err(ApiError::invalid_input(format!(
            "`pooling` is not accepted by {model}: it always uses mean pooling"
        )));
    }
    let chosen = valid.pooling.unwrap_or(PoolingChoice::Mean);
    let reported = (!fixed_pooling).then_some(chosen);
    let mut texts = valid.texts;
    if let EmbeddingsForm::Ranked { query } = &valid.form {
        texts.insert(0, query.clone());
    }
    let (out, dims, resolved) = state.app.embed(model, texts, pooling(chosen)).await?;
    let tokens = out.tokens as u64;
    let mut vectors = out.vectors;
    let result = match valid.form {
        EmbeddingsForm::Text => serde_json::to_value(EmbeddingsOutput {
            shape: [vectors.len(), dims],
            data: vectors,
            pooling: reported,
        }),
        EmbeddingsForm::Contexts => serde_json::to_value(ContextEmbeddingsOutput {
            shape: [vectors.len(), dims],
            response: vectors,
            pooling: chosen,
        }),
        EmbeddingsForm::Ranked { .. } => {
            let query = vectors.remove(0);
            let mut ranked: Vec<RankedContext> = vectors
                .iter()
                .enumerate()
                .map(|(id, v)| RankedContext {
                    id,
                    score: cosine(&query, v),
                })
                .collect();
            ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
            serde_json::to_value(RerankOutput { response: ranked })
        }
    }
    .map_err(|e| {
        tracing::error!(error = %e, "embeddings result not serializable");
        ApiError::plain(hearth_types::ErrorCode::Internal)
    })?;
    Ok((result, tokens, resolved))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    use hearth_vector::distance::dot;
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt().max(1e-12)
}

/// `POST /ai/run/@cf/baai/bge-reranker-base`: contexts ranked best first.
pub async fn rerank(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    admission: &Admission,
) -> Result<Response, Failure> {
    let input: RerankInput = body::parse_json(bytes)?;
    let valid = input.validate()?;
    let (scores, resolved) = state.app.rerank(model, valid.query, valid.contexts).await?;
    // The reranker reports no token counts: the request is counted, not priced.
    admission.charge(0, 0);
    let mut ranked: Vec<RankedContext> = scores
        .into_iter()
        .enumerate()
        .map(|(id, score)| RankedContext { id, score })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    if let Some(k) = valid.top_k {
        ranked.truncate(k);
    }
    Ok(enveloped(RerankOutput { response: ranked }, &resolved))
}

/// `POST /ai/run/@cf/huggingface/distilbert-sst-2-int8`: `[{label, score}]`.
pub async fn classify(
    state: &AppState,
    model: &str,
    bytes: &[u8],
    admission: &Admission,
) -> Result<Response, Failure> {
    let input: ClassificationInput = body::parse_json(bytes)?;
    let text = input.validate()?;
    let (labels, resolved) = state.app.classify(model, text).await?;
    admission.charge(0, 0);
    let result: Vec<LabelScore> = labels
        .into_iter()
        .map(|(label, score)| LabelScore { label, score })
        .collect();
    Ok(enveloped(result, &resolved))
}

/// `POST /ai/v1/embeddings`.
pub async fn openai(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(params): axum::extract::Path<std::collections::HashMap<String, String>>,
    request: axum::extract::Request,
) -> Result<Response, Failure> {
    let bytes = body::read(request.into_body(), state.body_limit()).await?;
    let req: OpenAiEmbeddingsRequest = body::parse_json(&bytes)?;
    let valid = req.validate()?;
    let account = params.get("account_id").map(String::as_str).unwrap_or("");
    let task = state.app.resolve(&valid.model)?.task;
    let admission = Admission::admit(&state, account, &valid.model, &task)?;
    let (out, dims, resolved) = state
        .app
        .embed(&valid.model, valid.texts, Pooling::Mean)
        .await?;
    admission.charge(out.tokens as u64, 0);
    if let Some(wanted) = valid.dimensions
        && wanted != dims
    {
        return Err(Failure(ApiError::invalid_input(format!(
            "`dimensions` must be {dims} for {} (no reduction is offered)",
            valid.model
        ))));
    }
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match valid.format {
                EncodingFormat::Float => json!(v),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let mut response = Json(json!({
        "object": "list",
        "data": data,
        "model": valid.model,
        "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
    }))
    .into_response();
    tag_response(&mut response, &resolved);
    Ok(response)
}
