//! Audio downloads (voicemail, recordings, prompts) with HTTP Range support, so a browser's
//! `<audio>` element can seek: one byte range per request (`bytes=A-B`, `bytes=A-`,
//! `bytes=-N`) answered with 206 and `Content-Range`; an unsatisfiable one gets 416; several
//! ranges get the whole file (RFC 9110 lets a server ignore Range).
//!
//! The bytes stream from the node's local copy when there is one (a voicemail's working copy,
//! or a recording not uploaded yet) and otherwise from blob storage; neither is read into
//! memory whole.

use super::error::Problem;
use crate::blob::BlobStore;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::TryStreamExt;
use std::ops::Range;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Where the audio is.
pub struct AudioSource<'a> {
    /// A local file, used when it exists.
    pub local: Option<PathBuf>,
    /// The blob store and key, used otherwise.
    pub blob: Option<(&'a BlobStore, String)>,
}

/// The requested range resolved against `size`: None for the whole file, Err for 416.
pub fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // The last N bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        size.saturating_sub(n)..size
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            let last: u64 = b.parse().map_err(|_| ())?;
            if last < start {
                return Err(());
            }
            last.saturating_add(1).min(size)
        };
        start..end
    };
    if range.start >= size {
        return Err(());
    }
    Ok(Some(range))
}

fn file_stream(
    f: tokio::fs::File,
    left: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::try_unfold((f, left), |(mut f, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; (64 * 1024).min(left as usize)];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), (f, left - n as u64))))
    })
}

/// Serves `src` as `audio/wav` named `filename`; 404 (`what`) when it is nowhere.
pub async fn serve(
    headers: &HeaderMap,
    filename: &str,
    what: &str,
    src: AudioSource<'_>,
) -> Result<Response, Problem> {
    if let Some(path) = src.local.filter(|p| p.is_file()) {
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(|_| Problem::not_found(what))?;
        let size = f
            .metadata()
            .await
            .map_err(|_| Problem::not_found(what))?
            .len();
        let range = match parse_range(headers, size) {
            Ok(r) => r,
            Err(()) => return Ok(unsatisfiable(size)),
        };
        let r = range.clone().unwrap_or(0..size);
        f.seek(std::io::SeekFrom::Start(r.start))
            .await
            .map_err(|_| Problem::not_found(what))?;
        let body = Body::from_stream(file_stream(f, r.end - r.start));
        return Ok(respond(filename, size, range, body));
    }
    let Some((store, key)) = src.blob else {
        return Err(Problem::not_found(what));
    };
    let size = store.size(&key).await.map_err(|e| match e {
        crate::blob::BlobError::NotFound => Problem::not_found(what),
        other => Problem::from(other),
    })?;
    let range = match parse_range(headers, size) {
        Ok(r) => r,
        Err(()) => return Ok(unsatisfiable(size)),
    };
    let read = store.read(&key, range.clone()).await.map_err(|e| match e {
        crate::blob::BlobError::NotFound => Problem::not_found(what),
        other => Problem::from(other),
    })?;
    let body = Body::from_stream(read.stream.map_err(std::io::Error::other));
    Ok(respond(filename, size, range, body))
}

fn respond(filename: &str, size: u64, range: Option<Range<u64>>, body: Body) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    let len = range.as_ref().map(|r| r.end - r.start).unwrap_or(size);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(r) = range {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    resp
}

fn unsatisfiable(size: u64) -> Response {
    let mut resp = Problem::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range-not-satisfiable",
        format!("the audio has {size} bytes"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, size: u64) -> Result<Option<Range<u64>>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        parse_range(&h, size)
    }

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(range("bytes=0-99", 1000), Ok(Some(0..100)));
        assert_eq!(range("bytes=900-", 1000), Ok(Some(900..1000)));
        assert_eq!(range("bytes=-100", 1000), Ok(Some(900..1000)));
        assert_eq!(range("bytes=-5000", 1000), Ok(Some(0..1000)));
        assert_eq!(range("bytes=990-2000", 1000), Ok(Some(990..1000)));
        assert_eq!(range("bytes=1000-", 1000), Err(()));
        assert_eq!(range("bytes=5-2", 1000), Err(()));
        assert_eq!(range("bytes=-0", 1000), Err(()));
        assert_eq!(range("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(range("items=0-1", 1000), Ok(None));
        assert_eq!(parse_range(&HeaderMap::new(), 1000), Ok(None));
    }
}
