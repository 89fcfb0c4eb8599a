//! The logs API's query language: `filters[]` (as the official SDKs send
//! them: `filters.key=..&filters.operator=..&filters.value=..`, repeated;
//! also bracketed or JSON-encoded), the deprecated flat parameters, search
//! and ordering, turned into the store's [`LogQuery`].

use hearth_store::{FILTER_KEYS, FilterOp, LogFilter, LogQuery, ORDER_KEYS};
use serde_json::Value;

use crate::{GatewayError, invalid};

fn op(s: &str) -> Result<FilterOp, GatewayError> {
    Ok(match s {
        "eq" => FilterOp::Eq,
        "neq" => FilterOp::Neq,
        "contains" => FilterOp::Contains,
        "lt" => FilterOp::Lt,
        "gt" => FilterOp::Gt,
        other => {
            return Err(invalid(format!(
                "`filters[].operator` must be eq, neq, contains, lt or gt, got `{other}`"
            )));
        }
    })
}

fn scalar(raw: &str) -> Value {
    match raw {
        "null" => Value::Null,
        _ => Value::String(raw.to_string()),
    }
}

#[derive(Default)]
struct Partial {
    key: Option<String>,
    op: Option<String>,
    values: Vec<Value>,
}

impl Partial {
    fn finish(self) -> Result<LogFilter, GatewayError> {
        let key = self
            .key
            .ok_or_else(|| invalid("each of `filters[]` needs a `key`"))?;
        if !FILTER_KEYS.contains(&key.as_str()) {
            return Err(invalid(format!(
                "`filters[].key` `{key}` is not one of {FILTER_KEYS:?}"
            )));
        }
        let op = op(self.op.as_deref().unwrap_or("eq"))?;
        if self.values.is_empty() {
            return Err(invalid(format!("the filter on `{key}` needs a `value`")));
        }
        Ok(LogFilter {
            key,
            op,
            values: self.values,
        })
    }
}

fn from_json(raw: &str) -> Result<Vec<LogFilter>, GatewayError> {
    let parsed: Value = serde_json::from_str(raw)
        .map_err(|e| invalid(format!("`filters` is not valid JSON: {e}")))?;
    let items = match parsed {
        Value::Array(a) => a,
        obj @ Value::Object(_) => vec![obj],
        _ => {
            return Err(invalid(
                "`filters` must be an array of {key, operator, value}",
            ));
        }
    };
    items
        .into_iter()
        .map(|item| {
            let key = item.get("key").and_then(Value::as_str).map(str::to_string);
            let op = item
                .get("operator")
                .and_then(Value::as_str)
                .map(str::to_string);
            let values = match item.get("value") {
                Some(Value::Array(v)) => v.clone(),
                Some(v) => vec![v.clone()],
                None => Vec::new(),
            };
            Partial { key, op, values }.finish()
        })
        .collect()
}

/// Groups dotted filter fields into filters. Two orders reach the server:
/// each filter's fields together (`key, operator, value, key, ...`), or,
/// as the official Python SDK's HTTP client merges repeated names, all
/// keys, then all operators, then all values; then filter i takes key i,
/// operator i and value i (or every value when there is one filter).
fn group_dotted(
    (keys, ops, values): (Vec<String>, Vec<String>, Vec<Value>),
    order: &[String],
) -> Result<Vec<LogFilter>, GatewayError> {
    if keys.is_empty() {
        if ops.is_empty() && values.is_empty() {
            return Ok(Vec::new());
        }
        return Err(invalid("each of `filters[]` needs a `key`"));
    }
    let interleaved = order.windows(2).all(|w| !(w[0] == "key" && w[1] == "key"));
    if interleaved {
        let (mut k, mut o, mut v) = (keys.into_iter(), ops.into_iter(), values.into_iter());
        let mut out = Vec::new();
        let mut current: Option<Partial> = None;
        for field in order {
            match field.as_str() {
                "key" => {
                    if let Some(done) = current.take() {
                        out.push(done.finish()?);
                    }
                    current = Some(Partial {
                        key: k.next(),
                        ..Default::default()
                    });
                }
                "operator" => current.get_or_insert_with(Default::default).op = o.next(),
                _ => current
                    .get_or_insert_with(Default::default)
                    .values
                    .extend(v.next()),
            }
        }
        if let Some(done) = current.take() {
            out.push(done.finish()?);
        }
        return Ok(out);
    }
    if values.len() != keys.len() {
        return Err(invalid(format!(
            "{} filter keys with {} values: send one value per filter, or the filters as JSON in `filters`",
            keys.len(),
            values.len()
        )));
    }
    keys.into_iter()
        .zip(values)
        .enumerate()
        .map(|(i, (key, value))| {
            Partial {
                key: Some(key),
                op: ops.get(i).cloned(),
                values: vec![value],
            }
            .finish()
        })
        .collect()
}

/// The query of a logs list or bulk delete, from the query-string pairs in
/// order. Returns the query and the other pairs (paging, limit).
pub fn parse_query(
    pairs: &[(String, String)],
) -> Result<(LogQuery, Vec<(String, String)>), GatewayError> {
    let mut q = LogQuery::default();
    let mut rest = Vec::new();
    // Dotted fields (keys, operators, values) in arrival order.
    let mut dotted: (Vec<String>, Vec<String>, Vec<Value>) = Default::default();
    let mut order: Vec<String> = Vec::new();
    // Bracketed forms carry an index: `filters[0][key]`.
    let mut indexed: std::collections::BTreeMap<usize, Partial> = Default::default();
    let mut flat = Vec::new();
    for (k, v) in pairs {
        let field = k
            .strip_prefix("filters.")
            .or_else(|| k.strip_prefix("filters[]."))
            .or_else(|| {
                k.strip_prefix("filters[][")
                    .and_then(|f| f.strip_suffix(']'))
            });
        let field = field.map(|f| f.trim_end_matches("[]"));
        if let Some(field) = field {
            match field {
                "key" => dotted.0.push(v.clone()),
                "operator" => dotted.1.push(v.clone()),
                "value" => dotted.2.push(scalar(v)),
                other => return Err(invalid(format!("unknown filter field `{other}`"))),
            }
            order.push(field.to_string());
            continue;
        }
        if let Some((idx, field)) = k
            .strip_prefix("filters[")
            .and_then(|inner| inner.split_once("]["))
            && let Ok(idx) = idx.parse::<usize>()
        {
            let field = field.trim_end_matches("[]").trim_end_matches(']');
            let field = field.split(']').next().unwrap_or(field);
            let p = indexed.entry(idx).or_default();
            match field {
                "key" => p.key = Some(v.clone()),
                "operator" => p.op = Some(v.clone()),
                "value" => p.values.push(scalar(v)),
                other => return Err(invalid(format!("unknown filter field `{other}`"))),
            }
            continue;
        }
        match k.as_str() {
            "filters" | "filters[]" => q.filters.extend(from_json(v)?),
            "search" => q.search = Some(v.clone()),
            "order_by" => {
                if !ORDER_KEYS.contains(&v.as_str()) {
                    return Err(invalid(format!(
                        "`order_by` must be one of {ORDER_KEYS:?}, got `{v}`"
                    )));
                }
                q.order_by = v.clone();
            }
            "order_by_direction" | "direction" => {
                q.ascending = match v.as_str() {
                    "asc" => true,
                    "desc" => false,
                    other => {
                        return Err(invalid(format!("`{k}` must be asc or desc, got `{other}`")));
                    }
                }
            }
            // The deprecated flat parameters, still accepted.
            "cached"
            | "success"
            | "provider"
            | "model"
            | "model_type"
            | "request_content_type"
            | "response_content_type" => flat.push(LogFilter {
                key: k.clone(),
                op: FilterOp::Eq,
                values: vec![scalar(v)],
            }),
            "feedback" => flat.push(LogFilter {
                key: "feedback".into(),
                op: FilterOp::Eq,
                values: vec![Value::String(if v == "0" {
                    "-1".into()
                } else {
                    v.clone()
                })],
            }),
            "start_date" | "end_date" => flat.push(LogFilter {
                key: "created_at".into(),
                op: if k == "start_date" {
                    FilterOp::Gt
                } else {
                    FilterOp::Lt
                },
                values: vec![Value::String(v.clone())],
            }),
            _ => {
                let bound = k
                    .strip_prefix("min_")
                    .map(|f| (f, FilterOp::Gt))
                    .or_else(|| k.strip_prefix("max_").map(|f| (f, FilterOp::Lt)));
                match bound {
                    Some((f, op))
                        if [
                            "cost",
                            "duration",
                            "tokens_in",
                            "tokens_out",
                            "total_tokens",
                        ]
                        .contains(&f) =>
                    {
                        let key = if f == "total_tokens" { "tokens" } else { f };
                        v.parse::<f64>()
                            .map_err(|_| invalid(format!("`{k}` must be a number, got `{v}`")))?;
                        flat.push(LogFilter {
                            key: key.into(),
                            op,
                            values: vec![Value::String(v.clone())],
                        });
                    }
                    _ => rest.push((k.clone(), v.clone())),
                }
            }
        }
    }
    q.filters.extend(group_dotted(dotted, &order)?);
    for (_, p) in indexed {
        q.filters.push(p.finish()?);
    }
    q.filters.extend(flat);
    Ok((q, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sdk_dotted_filters_group_by_key() {
        // What cloudflare==5.9.0 sends for two filters.
        let (q, rest) = parse_query(&pairs(&[
            ("filters.key", "model"),
            ("filters.operator", "eq"),
            ("filters.value", "a"),
            ("filters.value", "b"),
            ("filters.key", "cost"),
            ("filters.operator", "gt"),
            ("filters.value", "1"),
            ("page", "2"),
        ]))
        .unwrap();
        assert_eq!(q.filters.len(), 2);
        assert_eq!(q.filters[0].values.len(), 2);
        assert_eq!(q.filters[1].op, FilterOp::Gt);
        assert_eq!(rest, pairs(&[("page", "2")]));
        // What the SDK's HTTP client actually sends: the names grouped.
        let (q, _) = parse_query(&pairs(&[
            ("filters.key", "provider"),
            ("filters.key", "tokens_in"),
            ("filters.operator", "eq"),
            ("filters.operator", "gt"),
            ("filters.value", "workers-ai"),
            ("filters.value", "0"),
        ]))
        .unwrap();
        assert_eq!(q.filters.len(), 2);
        assert_eq!(
            (q.filters[1].key.as_str(), q.filters[1].op),
            ("tokens_in", FilterOp::Gt)
        );
        assert_eq!(
            q.filters[0].values,
            vec![Value::String("workers-ai".into())]
        );
    }

    #[test]
    fn other_forms_and_errors() {
        let (q, _) = parse_query(&pairs(&[
            ("filters[0][key]", "cached"),
            ("filters[0][operator]", "eq"),
            ("filters[0][value][]", "true"),
            (
                "filters",
                r#"[{"key": "success", "operator": "eq", "value": [false]}]"#,
            ),
            ("min_cost", "0.5"),
            ("order_by", "duration"),
            ("order_by_direction", "asc"),
        ]))
        .unwrap();
        assert_eq!(q.filters.len(), 3);
        assert!(q.ascending);
        for (bad, needle) in [
            (
                pairs(&[("filters.key", "colour"), ("filters.value", "x")]),
                "colour",
            ),
            (
                pairs(&[
                    ("filters.key", "model"),
                    ("filters.operator", "like"),
                    ("filters.value", "x"),
                ]),
                "operator",
            ),
            (pairs(&[("filters.key", "model")]), "value"),
            (pairs(&[("order_by", "id")]), "order_by"),
            (pairs(&[("max_cost", "lots")]), "max_cost"),
        ] {
            let e = parse_query(&bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
