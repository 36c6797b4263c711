//! Reading policy documents: a YAML stream (`---`-separated) in, validated [`Policy`]
//! values or *every* problem out, each naming its document, field and reason.
//!
//! This is what `ferrulectl apply` and the control plane's admin API run on an
//! operator's file; nothing is applied unless the whole stream is valid.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::policy::{Policy, RawPolicy, validate};

/// One problem in a document stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DocumentError {
    /// The document's index in the stream (0-based, empty documents counted).
    pub document: usize,
    /// The document's `metadata.name`, when it has a string one.
    pub name: Option<String>,
    /// The field concerned, as a path: `spec.rules[1].to.paths[0]`; empty for a
    /// problem with the document as a whole (such as a YAML syntax error).
    pub field: String,
    /// What is wrong, and usually what to write instead.
    pub reason: String,
    /// The 1-based line in the input, when the YAML parser reported one.
    pub line: Option<usize>,
    /// The 1-based column in the input, when the YAML parser reported one.
    pub column: Option<usize>,
}

/// `document 1 ('allow-web'), spec.action: unknown action "PERMIT": ... (line 7, column 11)`.
impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(name) = &self.name {
            write!(f, " ('{name}')")?;
        }
        if !self.field.is_empty() {
            write!(f, ", {}", self.field)?;
        }
        write!(f, ": {}", self.reason)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

/// Parses and validates every `AuthorizationPolicy` document in a YAML stream.
///
/// Empty documents (a leading or trailing `---`) are skipped. Names must be unique in
/// the stream. On any problem, returns all problems found: every document is checked,
/// except that nothing after a YAML syntax error can be read (the parser cannot resync).
///
/// ```
/// let yaml = r#"
/// apiVersion: ferrule.dev/v1alpha1
/// kind: AuthorizationPolicy
/// metadata: {name: allow-web}
/// spec:
///   selector: {spiffeId: spiffe://td/ns/prod/sa/api}
///   action: PERMIT
/// "#;
/// let errors = ferrule_policy::parse_documents(yaml).unwrap_err();
/// assert_eq!(errors[0].field, "spec.action");
/// assert_eq!(errors[0].name.as_deref(), Some("allow-web"));
/// ```
pub fn parse_documents(yaml: &str) -> Result<Vec<Policy>, Vec<DocumentError>> {
    // serde_yaml_ng 0.10 panics on some malformed input instead of returning an error
    // (an alias to an undefined anchor inside a sequence, `[*a]`; found by
    // `fuzz/fuzz_targets/policy_yaml.rs`). Documents come from operators through the
    // control plane's admin API: refuse them, never crash on them.
    std::panic::catch_unwind(|| parse_stream(yaml)).unwrap_or_else(|_| {
        Err(vec![DocumentError {
            document: 0,
            name: None,
            field: String::new(),
            reason: "the YAML parser failed on this input (an alias to an undefined anchor?); \
                     nothing was read"
                .into(),
            line: None,
            column: None,
        }])
    })
}

fn parse_stream(yaml: &str) -> Result<Vec<Policy>, Vec<DocumentError>> {
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();

    // Each document is read twice: loosely (to skip empty ones, tell syntax errors
    // apart and find the name for error reports) and as a policy (for field paths).
    let loose = serde_yaml_ng::Deserializer::from_str(yaml);
    let typed = serde_yaml_ng::Deserializer::from_str(yaml);
    let mut last_failure = None;
    for (document, (loose, typed)) in loose.zip(typed).enumerate() {
        let value = match Value::deserialize(loose) {
            Ok(value) => value,
            Err(e) => {
                // A YAML syntax error is sticky: the parser reports it again for every
                // later "document", endlessly. Stop at the first repeat. (Other loose
                // failures, such as a duplicate key, are per document.)
                let message = e.to_string();
                if last_failure.as_ref() == Some(&message) {
                    break;
                }
                errors.push(from_yaml(document, None, &e));
                last_failure = Some(message);
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let raw = match RawPolicy::deserialize(typed) {
            Ok(raw) => raw,
            Err(e) => {
                errors.push(from_yaml(document, name, &e));
                continue;
            }
        };
        match validate(raw) {
            Ok(policy) => match names.get(policy.name()) {
                Some(first) => errors.push(DocumentError {
                    document,
                    name: name.clone(),
                    field: "metadata.name".into(),
                    reason: format!(
                        "duplicate name {:?}: document {first} has it too (names are unique keys)",
                        policy.name()
                    ),
                    line: None,
                    column: None,
                }),
                None => {
                    names.insert(policy.name().to_owned(), document);
                    policies.push(policy);
                }
            },
            Err(field_errors) => errors.extend(field_errors.into_iter().map(|e| DocumentError {
                document,
                name: name.clone(),
                field: e.field,
                reason: e.reason,
                line: None,
                column: None,
            })),
        }
    }

    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors)
    }
}

/// Maps a `serde_yaml_ng` error to a field path and reason.
///
/// Its messages read `spec.rules[0]: unknown field `x`, expected ... at line 9 column 7`
/// (the path is omitted at the document root); the location is taken from
/// [`serde_yaml_ng::Error::location`] and the path from the message.
fn from_yaml(document: usize, name: Option<String>, error: &serde_yaml_ng::Error) -> DocumentError {
    let location = error.location();
    let mut message = error.to_string();
    if let Some(loc) = &location {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if message.ends_with(&suffix) {
            message.truncate(message.len() - suffix.len());
        }
    }
    let (path, reason) = match message.split_once(": ") {
        Some((path, reason)) if is_field_path(path) => (path.to_owned(), reason.to_owned()),
        _ => (String::new(), message),
    };
    // Name the field itself for missing and unknown fields, not its parent.
    let field = match quoted_field(&reason, "missing field `")
        .or_else(|| quoted_field(&reason, "unknown field `"))
    {
        Some(key) if path.is_empty() => key.to_owned(),
        Some(key) => format!("{path}.{key}"),
        None => path,
    };
    DocumentError {
        document,
        name,
        field,
        reason,
        line: location.as_ref().map(serde_yaml_ng::Location::line),
        column: location.as_ref().map(serde_yaml_ng::Location::column),
    }
}

/// Whether `s` looks like a serde_yaml path (`spec.rules[0].to`), not prose.
fn is_field_path(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'[' | b']' | b'_' | b'?' | b'-')
        })
}

/// The key in a message starting with `prefix` followed by the key and a backtick.
fn quoted_field<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message
        .strip_prefix(prefix)?
        .split_once('`')
        .map(|(key, _)| key)
}

#[cfg(test)]
mod tests;
