//! Metadata filters as Vectorize takes them: `{key: value}` (implicit `$eq`)
//! or `{key: {$op: value}}`, keys ANDed, dotted keys reaching into nested
//! objects. Parsing validates everything Vectorize validates, so a bad filter
//! is refused before any work, with the key and operator named.

use serde_json::Value;

use crate::VectorError;

/// Compact JSON of a filter must stay under this many bytes.
pub const MAX_FILTER_BYTES: usize = 2048;
/// A filter key may be at most this many characters.
pub const MAX_FILTER_KEY_CHARS: usize = 512;

/// A filter operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
}

impl Scalar {
    fn parse(key: &str, op: &str, v: &Value) -> Result<Self, VectorError> {
        Ok(match v {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => Scalar::Number(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Scalar::String(s.clone()),
            _ => {
                return Err(VectorError::invalid(format!(
                    "filter `{key}`: `{op}` takes a string, number, boolean or null"
                )));
            }
        })
    }
}

/// One bound of a range.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub value: Scalar,
    pub inclusive: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Eq(Scalar),
    Ne(Scalar),
    In(Vec<Scalar>),
    Nin(Vec<Scalar>),
    Range {
        lower: Option<Bound>,
        upper: Option<Bound>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// The metadata property, dotted for nesting (`"pandas.nice"`).
    pub key: String,
    pub condition: Condition,
}

/// All clauses must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    pub clauses: Vec<Clause>,
}

impl Filter {
    pub fn parse(value: &Value) -> Result<Self, VectorError> {
        let Value::Object(map) = value else {
            return Err(VectorError::invalid("`filter` must be a JSON object"));
        };
        let compact = value.to_string();
        if compact.len() >= MAX_FILTER_BYTES {
            return Err(VectorError::invalid(format!(
                "`filter` is {} bytes of JSON; it must be under {MAX_FILTER_BYTES}",
                compact.len()
            )));
        }
        let mut clauses = Vec::with_capacity(map.len());
        for (key, spec) in map {
            validate_key(key)?;
            let condition = match spec {
                Value::Object(ops) => parse_ops(key, ops)?,
                Value::Array(_) => {
                    return Err(VectorError::invalid(format!(
                        "filter `{key}`: an array needs an operator (`$in` or `$nin`)"
                    )));
                }
                other => Condition::Eq(Scalar::parse(key, "$eq", other)?),
            };
            clauses.push(Clause {
                key: key.clone(),
                condition,
            });
        }
        Ok(Filter { clauses })
    }

    /// Whether metadata held outside an index (AI Search's keyword rows)
    /// passes, with the index's semantics: a missing key equals nothing and
    /// differs from everything, ranges compare numbers with numbers and
    /// strings with strings.
    pub fn matches(&self, metadata: &serde_json::Map<String, Value>) -> bool {
        self.clauses.iter().all(|clause| {
            let mut path = clause.key.split('.');
            let first = path.next().and_then(|k| metadata.get(k));
            let value = path.fold(first, |v, k| v.and_then(|v| v.get(k)));
            let eq = |s: &Scalar| value.is_some_and(|v| scalar_eq(s, v));
            match &clause.condition {
                Condition::Eq(s) => eq(s),
                Condition::Ne(s) => !eq(s),
                Condition::In(list) => list.iter().any(eq),
                Condition::Nin(list) => !list.iter().any(eq),
                Condition::Range { lower, upper } => value.is_some_and(|v| {
                    let within = |b: &Option<Bound>, below: bool| match b {
                        None => true,
                        Some(b) => match scalar_cmp(&b.value, v) {
                            Some(std::cmp::Ordering::Equal) => b.inclusive,
                            Some(std::cmp::Ordering::Less) => !below,
                            Some(std::cmp::Ordering::Greater) => below,
                            None => false,
                        },
                    };
                    within(lower, false) && within(upper, true)
                }),
            }
        })
    }
}

fn scalar_eq(s: &Scalar, v: &Value) -> bool {
    match (s, v) {
        (Scalar::Null, Value::Null) => true,
        (Scalar::Bool(a), Value::Bool(b)) => a == b,
        (Scalar::Number(a), Value::Number(b)) => b.as_f64() == Some(*a),
        (Scalar::String(a), Value::String(b)) => a == b,
        _ => false,
    }
}

/// How a bound compares with a value (`Less`: the bound is below it).
fn scalar_cmp(bound: &Scalar, v: &Value) -> Option<std::cmp::Ordering> {
    match (bound, v) {
        (Scalar::Number(a), Value::Number(b)) => a.partial_cmp(&b.as_f64()?),
        (Scalar::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

fn validate_key(key: &str) -> Result<(), VectorError> {
    if key.is_empty() {
        return Err(VectorError::invalid("filter keys must not be empty"));
    }
    if key.chars().count() > MAX_FILTER_KEY_CHARS {
        return Err(VectorError::invalid(format!(
            "filter key `{}…` is over {MAX_FILTER_KEY_CHARS} characters",
            key.chars().take(32).collect::<String>()
        )));
    }
    if key.starts_with('$') {
        return Err(VectorError::invalid(format!(
            "filter key `{key}` must not start with `$` (`$and`/`$or` are not supported: keys are ANDed)"
        )));
    }
    if key.contains('"') {
        return Err(VectorError::invalid(format!(
            "filter key `{key}` must not contain `\"`"
        )));
    }
    if key.split('.').any(str::is_empty) {
        return Err(VectorError::invalid(format!(
            "filter key `{key}` has an empty segment between dots"
        )));
    }
    Ok(())
}

fn parse_ops(key: &str, ops: &serde_json::Map<String, Value>) -> Result<Condition, VectorError> {
    if ops.is_empty() {
        return Err(VectorError::invalid(format!(
            "filter `{key}`: an operator object needs one operator"
        )));
    }
    let mut lower: Option<Bound> = None;
    let mut upper: Option<Bound> = None;
    let mut single: Option<Condition> = None;
    for (op, v) in ops {
        let list = |v: &Value| -> Result<Vec<Scalar>, VectorError> {
            let Value::Array(items) = v else {
                return Err(VectorError::invalid(format!(
                    "filter `{key}`: `{op}` takes an array"
                )));
            };
            items.iter().map(|i| Scalar::parse(key, op, i)).collect()
        };
        let range = |v: &Value| -> Result<Scalar, VectorError> {
            match Scalar::parse(key, op, v)? {
                s @ (Scalar::Number(_) | Scalar::String(_)) => Ok(s),
                _ => Err(VectorError::invalid(format!(
                    "filter `{key}`: `{op}` takes a string or a number"
                ))),
            }
        };
        match op.as_str() {
            "$eq" => single = Some(Condition::Eq(Scalar::parse(key, op, v)?)),
            "$ne" => single = Some(Condition::Ne(Scalar::parse(key, op, v)?)),
            "$in" => single = Some(Condition::In(list(v)?)),
            "$nin" => single = Some(Condition::Nin(list(v)?)),
            "$lt" | "$lte" => {
                if upper.is_some() {
                    return Err(VectorError::invalid(format!(
                        "filter `{key}`: only one of `$lt`/`$lte` may be given"
                    )));
                }
                upper = Some(Bound {
                    value: range(v)?,
                    inclusive: op == "$lte",
                });
            }
            "$gt" | "$gte" => {
                if lower.is_some() {
                    return Err(VectorError::invalid(format!(
                        "filter `{key}`: only one of `$gt`/`$gte` may be given"
                    )));
                }
                lower = Some(Bound {
                    value: range(v)?,
                    inclusive: op == "$gte",
                });
            }
            other => {
                return Err(VectorError::invalid(format!(
                    "filter `{key}`: unknown operator `{other}` (supported: $eq $ne $in $nin $lt $lte $gt $gte)"
                )));
            }
        }
    }
    let ranged = lower.is_some() || upper.is_some();
    match (single, ranged) {
        (Some(c), false) if ops.len() == 1 => Ok(c),
        (None, true) => {
            if let (Some(l), Some(u)) = (&lower, &upper)
                && std::mem::discriminant(&l.value) != std::mem::discriminant(&u.value)
            {
                return Err(VectorError::invalid(format!(
                    "filter `{key}`: both bounds of a range must be strings or both numbers"
                )));
            }
            Ok(Condition::Range { lower, upper })
        }
        _ => Err(VectorError::invalid(format!(
            "filter `{key}`: operators cannot be combined this way; only one lower bound (`$gt`/`$gte`) with one upper bound (`$lt`/`$lte`)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_documented_forms() {
        let f = Filter::parse(&json!({"genre": "drama", "year": {"$gte": 2000, "$lt": 2010}, "tags": {"$in": ["a", "b"]}, "pandas.nice": 42})).unwrap();
        assert_eq!(f.clauses.len(), 4);
        assert!(
            f.clauses
                .iter()
                .any(|c| c.key == "pandas.nice"
                    && c.condition == Condition::Eq(Scalar::Number(42.0)))
        );
    }

    #[test]
    fn matches_metadata_as_the_index_does() {
        let meta = json!({"folder": "docs/", "timestamp": 1700000000, "nested": {"n": 2}});
        let meta = meta.as_object().cloned().unwrap_or_default();
        let yes = |f: Value| Filter::parse(&f).map(|f| f.matches(&meta)).unwrap_or(false);
        assert!(yes(json!({"folder": "docs/"})));
        assert!(!yes(json!({"folder": "doc"})));
        assert!(yes(json!({"folder": {"$ne": "x/"}, "missing": {"$ne": 1}})));
        assert!(!yes(json!({"missing": "x"})));
        assert!(yes(
            json!({"timestamp": {"$gte": 1700000000, "$lt": 1700000001}})
        ));
        assert!(!yes(json!({"timestamp": {"$gt": 1700000000}})));
        assert!(!yes(json!({"timestamp": {"$gt": "a"}})));
        assert!(yes(
            json!({"folder": {"$in": ["a/", "docs/"]}, "nested.n": 2})
        ));
        assert!(yes(json!({"folder": {"$gt": "doc", "$lte": "docs/z"}})));
    }

    #[test]
    fn refuses_what_vectorize_refuses() {
        for (bad, needle) in [
            (json!({"a": {"$regex": "x"}}), "unknown operator `$regex`"),
            (json!({"a": {"$eq": 1, "$lt": 2}}), "cannot be combined"),
            (
                json!({"a": {"$lt": 1, "$lte": 2}}),
                "only one of `$lt`/`$lte`",
            ),
            (json!({"$and": []}), "must not start with `$`"),
            (json!({"a": {"$in": "x"}}), "takes an array"),
            (json!({"a": {"$gt": true}}), "string or a number"),
            (json!({"a": [1]}), "needs an operator"),
            (json!({"": 1}), "must not be empty"),
            (json!([1]), "must be a JSON object"),
            (json!({"a": "x".repeat(3000)}), "under 2048"),
        ] {
            let e = Filter::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
