//! Download responses: status and headers from what is stored and what the
//! request asks, as pure functions; the body comes from
//! [`FileStore::body`].

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use headers::{ETag, HeaderMapExt, IfNoneMatch, IfRange};
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, RANGE, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_range_header::RangeUnsatisfiableError;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::imaging::THUMBNAIL_CONTENT_TYPE;
use crate::sniff::{SVG, TEXT};
use crate::{Blob, ByteStream, ContentHash, FileError, FileStore};

/// How long a browser may reuse a download without asking again. A file's
/// bytes never change under its id, but downloads are authorized, so only
/// the user's own browser caches them (`private`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// What is being downloaded, from the file's stored record.
#[derive(Debug, Clone, Copy)]
pub struct Download<'a> {
    pub blob: Blob,
    /// The blob's length in bytes.
    pub size: u64,
    /// The sniffed type stored with the file.
    pub content_type: &'a str,
    /// The (sanitized) file name offered to save it as.
    pub name: &'a str,
}

impl<'a> Download<'a> {
    /// The uploaded file itself.
    pub fn original(sha256: ContentHash, size: u64, content_type: &'a str, name: &'a str) -> Self {
        Download {
            blob: Blob::Original(sha256),
            size,
            content_type,
            name,
        }
    }

    /// The thumbnail of an image (always a JPEG); `size` is
    /// [`crate::StoredThumbnail::size`], `name` the original's (it is saved
    /// as `cat.jpg` for `cat.png`).
    pub fn thumbnail(sha256: ContentHash, size: u64, name: &'a str) -> Self {
        Download {
            blob: Blob::Thumbnail(sha256),
            size,
            content_type: THUMBNAIL_CONTENT_TYPE,
            name,
        }
    }
}

/// What to answer: status, headers, and which bytes to send.
#[derive(Debug, Clone)]
pub struct ResponsePlan {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyPlan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body (304, 416).
    Empty,
    /// The whole blob (200).
    Whole,
    /// These bytes of it (206), end exclusive.
    Range(Range<u64>),
}

/// The answer to `GET` of a stored file given the request's headers.
///
/// - Always: `X-Content-Type-Options: nosniff`, `Content-Security-Policy:
///   sandbox` (nothing served runs as a page of our origin),
///   `ETag: "SHA256"` (`"SHA256.thumb"` for a thumbnail; strong, since
///   the bytes behind a hash never change), `Cache-Control: private,
///   max-age=…`.
/// - `If-None-Match` naming the ETag (or `*`): 304, no body.
/// - Otherwise `Content-Type` (the sniffed type; `text/plain;
///   charset=utf-8` for text), `Content-Disposition` (`inline` for images,
///   `attachment` for everything else, with the name as `filename*=UTF-8''…`
///   and an ASCII `filename="…"` for old clients), `Accept-Ranges: bytes`.
/// - `Range: bytes=…` with one satisfiable range (and no `If-Range`, or
///   one naming the ETag): 206 with `Content-Range`. Several ranges are
///   answered with the whole file (200), as HTTP allows; so is a `Range`
///   that does not parse. A range that starts past the end: 416 with
///   `Content-Range: bytes */SIZE`.
pub fn plan_download(
    download: &Download<'_>,
    request: &HeaderMap,
    max_age: Duration,
) -> ResponsePlan {
    let etag_text = etag_text(download.blob);
    let mut headers = HeaderMap::new();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    headers.insert(ETAG, header_value(&etag_text));
    headers.insert(
        CACHE_CONTROL,
        header_value(&format!("private, max-age={}", max_age.as_secs())),
    );
    let etag: ETag = etag_text.parse().expect("a quoted hex string is an ETag");

    if let Some(if_none_match) = request.typed_get::<IfNoneMatch>() {
        if !if_none_match.precondition_passes(&etag) {
            return ResponsePlan {
                status: StatusCode::NOT_MODIFIED,
                headers,
                body: BodyPlan::Empty,
            };
        }
    }

    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let size = download.size;
    let range = request
        .get(RANGE)
        .and_then(|value| value.to_str().ok())
        .filter(|_| {
            request
                .typed_get::<IfRange>()
                .is_none_or(|if_range| !if_range.is_modified(Some(&etag), None))
        });
    let body = match range.map(|value| http_range_header::parse_range_header(value)?.validate(size))
    {
        Some(Ok(ranges)) if ranges.len() == 1 => {
            let (first, last) = ranges[0].clone().into_inner();
            BodyPlan::Range(first..last + 1)
        }
        Some(Err(RangeUnsatisfiableError::Unsatisfiable)) => {
            headers.insert(CONTENT_RANGE, header_value(&format!("bytes */{size}")));
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            return ResponsePlan {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                headers,
                body: BodyPlan::Empty,
            };
        }
        _ => BodyPlan::Whole,
    };

    headers.insert(CONTENT_TYPE, content_type_value(download.content_type));
    let name = match download.blob {
        Blob::Original(_) => Cow::Borrowed(download.name),
        Blob::Thumbnail(_) => Cow::Owned(thumbnail_name(download.name)),
    };
    headers.insert(
        CONTENT_DISPOSITION,
        content_disposition(download.content_type, &name),
    );
    let status = match &body {
        BodyPlan::Range(range) => {
            headers.insert(
                CONTENT_RANGE,
                header_value(&format!("bytes {}-{}/{size}", range.start, range.end - 1)),
            );
            headers.insert(CONTENT_LENGTH, (range.end - range.start).into());
            StatusCode::PARTIAL_CONTENT
        }
        _ => {
            headers.insert(CONTENT_LENGTH, size.into());
            StatusCode::OK
        }
    };
    ResponsePlan {
        status,
        headers,
        body,
    }
}

impl FileStore {
    /// The body a [`ResponsePlan`] calls for: `None` for [`BodyPlan::Empty`].
    pub async fn body(&self, blob: Blob, plan: &BodyPlan) -> Result<Option<ByteStream>, FileError> {
        match plan {
            BodyPlan::Empty => Ok(None),
            BodyPlan::Whole => Ok(Some(self.read(blob).await?)),
            BodyPlan::Range(range) => Ok(Some(self.read_range(blob, range.clone()).await?)),
        }
    }
}

fn etag_text(blob: Blob) -> String {
    match blob {
        Blob::Original(hash) => format!("\"{hash}\""),
        Blob::Thumbnail(hash) => format!("\"{hash}.thumb\""),
    }
}

fn thumbnail_name(original: &str) -> String {
    let stem = match original.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => original,
    };
    format!("{stem}.jpg")
}

/// Whether a type is shown in the page rather than saved: raster images.
fn shown_inline(content_type: &str) -> bool {
    content_type.starts_with("image/") && content_type != SVG
}

fn content_type_value(content_type: &str) -> HeaderValue {
    if content_type == TEXT {
        return HeaderValue::from_static("text/plain; charset=utf-8");
    }
    HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// RFC 5987's `attr-char`: what `filename*` may carry unencoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

fn content_disposition(content_type: &str, name: &str) -> HeaderValue {
    let kind = if shown_inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    // Old clients read only `filename`: printable ASCII, with what could
    // end or escape the quoted string, or be taken for an encoding, replaced.
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if !matches!(c, '"' | '\\' | '%') => c,
            _ => '_',
        })
        .collect();
    let encoded = utf8_percent_encode(name, ATTR_CHAR);
    header_value(&format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("built from visible ASCII only")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> ContentHash {
        ContentHash::of(b"hello world")
    }

    fn request(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn plan(download: &Download<'_>, pairs: &[(&'static str, &str)]) -> ResponsePlan {
        plan_download(download, &request(pairs), DEFAULT_MAX_AGE)
    }

    fn header<'a>(plan: &'a ResponsePlan, name: &str) -> Option<&'a str> {
        plan.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn pdf() -> Download<'static> {
        Download::original(hash(), 1000, "application/pdf", "Relatório \"final\".pdf")
    }

    #[test]
    fn whole_file_headers() {
        let plan = plan(&pdf(), &[]);
        assert_eq!(plan.status, StatusCode::OK);
        assert_eq!(plan.body, BodyPlan::Whole);
        assert_eq!(header(&plan, "content-type"), Some("application/pdf"));
        assert_eq!(header(&plan, "content-length"), Some("1000"));
        assert_eq!(header(&plan, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&plan, "content-security-policy"), Some("sandbox"));
        assert_eq!(header(&plan, "accept-ranges"), Some("bytes"));
        assert_eq!(
            header(&plan, "cache-control"),
            Some("private, max-age=86400")
        );
        assert_eq!(
            header(&plan, "etag"),
            Some(format!("\"{}\"", hash()).as_str())
        );
        assert_eq!(
            header(&plan, "content-disposition"),
            Some("attachment; filename=\"Relat_rio _final_.pdf\"; filename*=UTF-8''Relat%C3%B3rio%20%22final%22.pdf")
        );
    }

    #[test]
    fn images_are_inline_and_text_says_its_charset() {
        let png = plan(&Download::original(hash(), 10, "image/png", "cat.png"), &[]);
        assert_eq!(
            header(&png, "content-disposition"),
            Some("inline; filename=\"cat.png\"; filename*=UTF-8''cat.png")
        );
        let text = plan(
            &Download::original(hash(), 10, "text/plain", "notes.txt"),
            &[],
        );
        assert_eq!(
            header(&text, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(header(&text, "content-disposition")
            .unwrap()
            .starts_with("attachment;"));
        let svg = plan(
            &Download::original(hash(), 10, "image/svg+xml", "x.svg"),
            &[],
        );
        assert!(header(&svg, "content-disposition")
            .unwrap()
            .starts_with("attachment;"));
        let thumbnail = plan(&Download::thumbnail(hash(), 10, "cat.png"), &[]);
        assert_eq!(header(&thumbnail, "content-type"), Some("image/jpeg"));
        assert_eq!(
            header(&thumbnail, "content-disposition"),
            Some("inline; filename=\"cat.jpg\"; filename*=UTF-8''cat.jpg")
        );
        assert_eq!(
            header(&thumbnail, "etag"),
            Some(format!("\"{}.thumb\"", hash()).as_str())
        );
    }

    #[test]
    fn matching_etag_is_not_modified() {
        let etag = format!("\"{}\"", hash());
        for value in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".into(),
        ] {
            let plan = plan(&pdf(), &[("if-none-match", &value)]);
            assert_eq!(plan.status, StatusCode::NOT_MODIFIED, "{value}");
            assert_eq!(plan.body, BodyPlan::Empty);
            assert_eq!(header(&plan, "etag"), Some(etag.as_str()));
            assert!(header(&plan, "cache-control").is_some());
            assert!(header(&plan, "content-length").is_none());
        }
        let other = plan(&pdf(), &[("if-none-match", "\"other\"")]);
        assert_eq!(other.status, StatusCode::OK);
        // 304 wins over a range.
        let both = plan(&pdf(), &[("if-none-match", &etag), ("range", "bytes=0-9")]);
        assert_eq!(both.status, StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn single_ranges_are_partial_content() {
        for (range, expected, content_range) in [
            ("bytes=0-99", 0..100, "bytes 0-99/1000"),
            ("bytes=990-", 990..1000, "bytes 990-999/1000"),
            ("bytes=-10", 990..1000, "bytes 990-999/1000"),
            ("bytes=900-5000", 900..1000, "bytes 900-999/1000"),
            ("bytes=-5000", 0..1000, "bytes 0-999/1000"),
            ("bytes=999-999", 999..1000, "bytes 999-999/1000"),
        ] {
            let plan = plan(&pdf(), &[("range", range)]);
            assert_eq!(plan.status, StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(plan.body, BodyPlan::Range(expected.clone()), "{range}");
            assert_eq!(
                header(&plan, "content-range"),
                Some(content_range),
                "{range}"
            );
            let length = (expected.end - expected.start).to_string();
            assert_eq!(
                header(&plan, "content-length"),
                Some(length.as_str()),
                "{range}"
            );
            assert_eq!(header(&plan, "content-type"), Some("application/pdf"));
        }
    }

    #[test]
    fn unsatisfiable_ranges_are_416() {
        for range in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
            let plan = plan(&pdf(), &[("range", range)]);
            assert_eq!(plan.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
            assert_eq!(plan.body, BodyPlan::Empty);
            assert_eq!(header(&plan, "content-range"), Some("bytes */1000"));
        }
    }

    #[test]
    fn other_ranges_get_the_whole_file() {
        for range in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=abc",
            "bytes=5-1",
            "bytes=0-0,-1",
        ] {
            let plan = plan(&pdf(), &[("range", range)]);
            assert_eq!(plan.status, StatusCode::OK, "{range}");
            assert_eq!(plan.body, BodyPlan::Whole, "{range}");
            assert!(header(&plan, "content-range").is_none());
        }
    }

    #[test]
    fn if_range_must_name_the_etag() {
        let etag = format!("\"{}\"", hash());
        let matching = plan(&pdf(), &[("range", "bytes=0-9"), ("if-range", &etag)]);
        assert_eq!(matching.status, StatusCode::PARTIAL_CONTENT);
        let stale = plan(&pdf(), &[("range", "bytes=0-9"), ("if-range", "\"old\"")]);
        assert_eq!(stale.status, StatusCode::OK);
        let dated = plan(
            &pdf(),
            &[
                ("range", "bytes=0-9"),
                ("if-range", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ],
        );
        assert_eq!(dated.status, StatusCode::OK);
    }
}
