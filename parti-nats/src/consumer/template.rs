//! Subjects and consumer names from a partition's keys.

use std::fmt;

use parti_core::PartitionId;
use parti_core::hash::fnv1a64;

use super::error::ConsumerError;

/// Where a partition's messages are published: a subject with placeholders for the partition's
/// keys.
///
/// `{0}`, `{1}`, … stand for one key each (by position); `{}` stands for all keys joined with
/// `.` (the partition's [`subject_key`](PartitionId::subject_key)). A key put into a subject
/// must be a valid subject token: no `.` (except through `{}`), `*`, `>` or whitespace.
///
/// ```
/// use parti_core::PartitionId;
/// use parti_nats::consumer::SubjectTemplate;
///
/// let t = SubjectTemplate::parse("orders.{0}.{1}")?;
/// let p = PartitionId::new(["eu", "7"])?;
/// assert_eq!(t.render(&p)?, "orders.eu.7");
/// assert_eq!(t.as_filter(), "orders.*.*");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Key(usize),
    AllKeys,
}

impl SubjectTemplate {
    /// Parses `text`; fails on an unbalanced brace, a placeholder that is not `{}` or `{N}`, a
    /// template without any placeholder (every partition would read the same subject), or
    /// literal text that is not a valid subject.
    pub fn parse(text: &str) -> Result<Self, ConsumerError> {
        let bad = |reason: &str| ConsumerError::InvalidTemplate {
            template: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => inner.push(c),
                            None => return Err(bad("a `{` is never closed")),
                        }
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    if inner.is_empty() {
                        parts.push(Part::AllKeys);
                    } else {
                        let index = inner.parse::<usize>().map_err(|_| {
                            bad(&format!(
                                "`{{{inner}}}` is not `{{}}` or `{{N}}` (a key index)"
                            ))
                        })?;
                        parts.push(Part::Key(index));
                    }
                }
                '}' => return Err(bad("a `}` has no `{`")),
                c if c.is_whitespace() || c == '*' || c == '>' => {
                    return Err(bad(
                        "subjects carry no whitespace and no wildcards (`*`, `>`)",
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.iter().any(|p| !matches!(p, Part::Literal(_))) {
            return Err(bad(
                "no placeholder: every partition would read the same subject (use `{}` or `{0}`)",
            ));
        }
        let filter = Self::filter_of(&parts);
        if filter.starts_with('.') || filter.ends_with('.') || filter.contains("..") {
            return Err(bad(
                "a subject has no empty tokens (`..`, or a leading or trailing `.`)",
            ));
        }
        Ok(SubjectTemplate {
            text: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The subject of `partition`'s messages.
    pub fn render(&self, partition: &PartitionId) -> Result<String, ConsumerError> {
        let keys = partition.keys();
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Key(i) => {
                    let key = keys.get(*i).ok_or_else(|| ConsumerError::InvalidPartitionKey {
                        partition: partition.to_string(),
                        reason: format!(
                            "the subject template `{}` uses key {i}, and the partition has {} key(s)",
                            self.text,
                            keys.len()
                        ),
                    })?;
                    check_token(partition, key)?;
                    out.push_str(key);
                }
                Part::AllKeys => {
                    for key in keys {
                        check_token(partition, key)?;
                    }
                    out.push_str(&partition.subject_key());
                }
            }
        }
        Ok(out)
    }

    /// The template as a subject filter: `{N}` as `*`, `{}` as `>` when it ends the template
    /// (a partition may have several keys) and `*` elsewhere.
    #[must_use]
    pub fn as_filter(&self) -> String {
        Self::filter_of(&self.parts)
    }

    fn filter_of(parts: &[Part]) -> String {
        let mut out = String::new();
        for (i, part) in parts.iter().enumerate() {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Key(_) => out.push('*'),
                Part::AllKeys if i + 1 == parts.len() => out.push('>'),
                Part::AllKeys => out.push('*'),
            }
        }
        out
    }
}

impl fmt::Debug for SubjectTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectTemplate({:?})", self.text)
    }
}

impl fmt::Display for SubjectTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn check_token(partition: &PartitionId, key: &str) -> Result<(), ConsumerError> {
    let bad = key
        .chars()
        .find(|c| c.is_whitespace() || *c == '*' || *c == '>' || *c == '.');
    match bad {
        None => Ok(()),
        Some(c) => Err(ConsumerError::InvalidPartitionKey {
            partition: partition.to_string(),
            reason: format!(
                "key {key:?} contains {c:?}, which a NATS subject token cannot carry \
                 (a key with `.` would also read as two keys); use keys without it"
            ),
        }),
    }
}

/// Whether every subject `filter` matches is also matched by `by` (NATS wildcard rules: `*` one
/// token, `>` one or more trailing tokens).
pub(crate) fn filter_within(filter: &str, by: &str) -> bool {
    let mut f = filter.split('.');
    let mut b = by.split('.');
    loop {
        match (f.next(), b.next()) {
            (None, None) => return true,
            (Some(_), Some(">")) => return true,
            (Some(">"), Some(_)) => return false,
            (Some(_), Some("*")) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

/// The durable consumer name of `partition`: `{prefix}-{keys joined by -}` when every key is made
/// of ASCII letters, digits and `_` (and the name is short); otherwise the keys with every other
/// character replaced by `_`, then `--` and a 64-bit digest of the exact keys. A plain name never
/// contains `--` (keys are non-empty), so the two forms never meet, and two partitions never
/// share a consumer (up to a 64-bit digest collision between two unusual names).
pub(crate) fn consumer_name(prefix: &str, partition: &PartitionId) -> String {
    const MAX: usize = 120;
    let plain_key = |k: &String| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let joined = partition.keys().join("-");
    if partition.keys().iter().all(plain_key) && joined.len() <= MAX {
        return format!("{prefix}-{joined}");
    }
    let clean: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX)
        .collect();
    // Length-prefixed keys: ["a", "b"] and ["a-b"] digest differently.
    let mut bytes = Vec::new();
    for k in partition.keys() {
        bytes.extend_from_slice(&(k.len() as u64).to_le_bytes());
        bytes.extend_from_slice(k.as_bytes());
    }
    format!("{prefix}-{clean}--{:016x}", fnv1a64(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(keys: &[&str]) -> PartitionId {
        PartitionId::new(keys.iter().copied()).unwrap()
    }

    #[test]
    fn renders_keys_by_position_and_all_keys() {
        let t = SubjectTemplate::parse("orders.{1}.{0}").unwrap();
        assert_eq!(t.render(&p(&["a", "b"])).unwrap(), "orders.b.a");
        let all = SubjectTemplate::parse("work.{}").unwrap();
        assert_eq!(all.render(&p(&["a", "b"])).unwrap(), "work.a.b");
        assert_eq!(all.as_filter(), "work.>");
        assert_eq!(SubjectTemplate::parse("{}.x").unwrap().as_filter(), "*.x");
    }

    #[test]
    fn refuses_bad_templates_with_the_reason() {
        for bad in [
            "orders",
            "orders.{",
            "orders.}",
            "orders.{x}",
            "or ders.{0}",
            "a.*.{0}",
            "a..{0}",
            "{0}.",
        ] {
            let e = SubjectTemplate::parse(bad).unwrap_err();
            assert!(
                matches!(e, ConsumerError::InvalidTemplate { .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn refuses_keys_a_subject_cannot_carry() {
        let t = SubjectTemplate::parse("o.{0}").unwrap();
        assert!(t.render(&p(&["a.b"])).is_err());
        assert!(t.render(&p(&["a*"])).is_err());
        assert!(t.render(&p(&["a b"])).is_err());
        let e = SubjectTemplate::parse("o.{2}")
            .unwrap()
            .render(&p(&["a"]))
            .unwrap_err();
        assert!(e.to_string().contains("uses key 2"), "{e}");
        // `{}` takes dotted keys as several tokens.
        assert_eq!(
            SubjectTemplate::parse("o.{}")
                .unwrap()
                .render(&p(&["a", "b"]))
                .unwrap(),
            "o.a.b"
        );
    }

    #[test]
    fn filters_nest_by_nats_rules() {
        assert!(filter_within("orders.*.*", "orders.>"));
        assert!(filter_within("orders.*.*", "orders.*.*"));
        assert!(filter_within("orders.eu.1", "orders.*.1"));
        assert!(!filter_within("orders.*.*", "orders.eu.*"));
        assert!(!filter_within("orders.>", "orders.*"));
        assert!(filter_within("orders.>", "orders.>"));
        assert!(!filter_within("orders", "orders.>"));
        assert!(!filter_within("orders.a.b", "orders.*"));
        assert!(filter_within("orders.a.b", ">"));
    }

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        assert_eq!(consumer_name("parti-x", &p(&["eu", "7"])), "parti-x-eu-7");
        let names = [
            consumer_name("c", &p(&["a.b"])),
            consumer_name("c", &p(&["a_b"])),
            consumer_name("c", &p(&["a", "b"])),
            consumer_name("c", &p(&["a-b"])),
            consumer_name("c", &p(&["a", "b-c"])),
            consumer_name("c", &p(&["a-b", "c"])),
            consumer_name("c", &p(&["x".repeat(300).as_str()])),
        ];
        assert_eq!(names[1], "c-a_b");
        assert_eq!(names[2], "c-a-b");
        assert!(names[3].starts_with("c-a-b--"), "{}", names[3]);
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        assert!(names[6].len() < 160, "{}", names[6].len());
        for n in &names {
            assert!(!n.contains(['.', '*', '>', ' ', '/', '\\']), "{n}");
        }
    }
}
