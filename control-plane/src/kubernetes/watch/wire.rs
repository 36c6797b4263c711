//! The Kubernetes list and watch wire format, as far as the watchers read it.
//!
//! * A list (`GET /api/v1/pods?limit=500`) answers `{"kind": "PodList", "metadata":
//!   {"resourceVersion": "..", "continue": ".."}, "items": [..]}`; items are decoded one
//!   by one, so one malformed object cannot hide the others.
//! * A watch (`GET ..?watch=1&resourceVersion=..&allowWatchBookmarks=true`) streams one
//!   JSON object per line: `{"type": "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" |
//!   "ERROR", "object": {..}}`. A `BOOKMARK` carries only `metadata.resourceVersion`; an
//!   `ERROR` carries a `Status` object (`code` 410 when the resource version is too old).
//!
//! Every field is optional or defaulted: the API server omits empty fields, and a
//! surprising document must be a decode error, never a panic.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// `null` and a missing field both decode to the default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The `metadata` fields the watchers read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    pub uid: String,
    #[serde(default, deserialize_with = "nullable")]
    pub resource_version: String,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub creation_timestamp: String,
}

/// An object the watchers track: it has metadata.
pub trait Object: DeserializeOwned {
    /// Its metadata.
    fn meta(&self) -> &ObjectMeta;
}

/// `metadata` of a list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    #[serde(default, deserialize_with = "nullable")]
    pub resource_version: String,
    /// The token for the next page; empty on the last page.
    #[serde(default, rename = "continue", deserialize_with = "nullable")]
    pub continue_token: String,
}

/// One page of a list response, items still undecoded.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListPage {
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: ListMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub items: Vec<serde_json::Value>,
}

/// A Kubernetes `Status` (the object of an `ERROR` event, and the body of a failed
/// request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Status {
    #[serde(default, deserialize_with = "nullable")]
    pub code: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub reason: String,
    #[serde(default, deserialize_with = "nullable")]
    pub message: String,
}

impl Status {
    /// 410 Gone / `Expired`: the resource version is older than the server keeps;
    /// only a new list can resynchronise.
    pub fn is_gone(&self) -> bool {
        self.code == 410 || self.reason == "Expired" || self.reason == "Gone"
    }
}

/// One decoded watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent<T> {
    Added(T),
    Modified(T),
    Deleted(T),
    /// Progress marker: the server's resource version, nothing changed.
    Bookmark {
        resource_version: String,
    },
    /// The watch failed; the stream ends after it.
    Error(Status),
}

impl<T> WatchEvent<T> {
    /// The `type` label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Added(_) => "ADDED",
            Self::Modified(_) => "MODIFIED",
            Self::Deleted(_) => "DELETED",
            Self::Bookmark { .. } => "BOOKMARK",
            Self::Error(_) => "ERROR",
        }
    }
}

/// Why a watch line could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The line is not a watch event at all (e.g. cut short by a dropped connection).
    /// Nothing was applied; watching again from the last resource version is safe.
    #[error("malformed watch line: {0}")]
    Line(serde_json::Error),
    /// A well-formed event of an unknown type.
    #[error("unknown watch event type {0:?}")]
    UnknownType(String),
    /// A well-formed event whose object is not understood. Watching again would meet
    /// it again; only a new list (which skips such objects) resynchronises.
    #[error("{event} event with an undecodable object: {error}")]
    Object {
        event: &'static str,
        error: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct Bookmark {
    #[serde(default, deserialize_with = "nullable")]
    metadata: ObjectMeta,
}

/// Decodes one watch line.
pub fn decode_event<T: DeserializeOwned>(line: &[u8]) -> Result<WatchEvent<T>, DecodeError> {
    let raw: RawEvent = serde_json::from_slice(line).map_err(DecodeError::Line)?;
    let object = |event: &'static str, v: serde_json::Value| {
        serde_json::from_value::<T>(v).map_err(|error| DecodeError::Object { event, error })
    };
    Ok(match raw.kind.as_str() {
        "ADDED" => WatchEvent::Added(object("ADDED", raw.object)?),
        "MODIFIED" => WatchEvent::Modified(object("MODIFIED", raw.object)?),
        "DELETED" => WatchEvent::Deleted(object("DELETED", raw.object)?),
        "BOOKMARK" => {
            let b: Bookmark =
                serde_json::from_value(raw.object).map_err(|error| DecodeError::Object {
                    event: "BOOKMARK",
                    error,
                })?;
            WatchEvent::Bookmark {
                resource_version: b.metadata.resource_version,
            }
        }
        // An ERROR whose object is not a Status is still an error.
        "ERROR" => WatchEvent::Error(serde_json::from_value(raw.object).unwrap_or_default()),
        _ => return Err(DecodeError::UnknownType(raw.kind)),
    })
}

/// Decodes a list page's items one by one: the good ones, and (index, error) for the
/// others.
pub fn decode_items<T: DeserializeOwned>(
    items: Vec<serde_json::Value>,
) -> (Vec<T>, Vec<(usize, serde_json::Error)>) {
    let mut good = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match serde_json::from_value(item) {
            Ok(v) => good.push(v),
            Err(e) => bad.push((i, e)),
        }
    }
    (good, bad)
}
