//! What a file is, decided from its bytes alone; the client's claim is only
//! checked against it.

use crate::FileError;

pub const PNG: &str = "image/png";
pub const JPEG: &str = "image/jpeg";
pub const GIF: &str = "image/gif";
pub const WEBP: &str = "image/webp";
pub const PDF: &str = "application/pdf";
pub const TEXT: &str = "text/plain";
pub(crate) const HTML: &str = "text/html";
pub(crate) const SVG: &str = "image/svg+xml";
const UNKNOWN: &str = "application/octet-stream";

/// The types accepted without configuration.
pub const BUILT_IN_TYPES: [&str; 6] = [PNG, JPEG, GIF, WEBP, PDF, TEXT];

/// How many leading bytes the type is decided from. Enough for every
/// signature `infer` knows, ZIP-based office documents included.
pub(crate) const SNIFF_BYTES: usize = 16 * 1024;

/// The raster images this crate reads dimensions of, strips and thumbnails.
pub(crate) fn raster_format(content_type: &str) -> Option<image::ImageFormat> {
    match content_type {
        PNG => Some(image::ImageFormat::Png),
        JPEG => Some(image::ImageFormat::Jpeg),
        GIF => Some(image::ImageFormat::Gif),
        WEBP => Some(image::ImageFormat::WebP),
        _ => None,
    }
}

/// The accepted types: the built-in ones plus configured others.
#[derive(Debug, Clone, Default)]
pub(crate) struct AcceptedTypes {
    extra: Vec<String>,
}

impl AcceptedTypes {
    pub(crate) fn new<S: AsRef<str>>(extra: &[S]) -> AcceptedTypes {
        AcceptedTypes {
            extra: extra.iter().map(|t| canonical(t.as_ref())).collect(),
        }
    }

    fn accepts(&self, content_type: &str) -> bool {
        BUILT_IN_TYPES.contains(&content_type) || self.extra.iter().any(|t| t == content_type)
    }
}

/// Watches an upload go by and decides its type at the end.
#[derive(Debug, Default)]
pub(crate) struct Sniffer {
    prefix: Vec<u8>,
    text: TextCheck,
}

impl Sniffer {
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        let room = SNIFF_BYTES - self.prefix.len();
        self.prefix
            .extend_from_slice(&chunk[..room.min(chunk.len())]);
        self.text.feed(chunk);
    }

    /// The served type of what went by, if it is accepted and fits the
    /// claimed type (the part's `Content-Type`, if any).
    pub(crate) fn finish(
        self,
        claimed: Option<&str>,
        accepted: &AcceptedTypes,
    ) -> Result<String, FileError> {
        let detected = detect(&self.prefix, self.text.finish());
        if detected == UNKNOWN {
            return Err(FileError::unsupported(
                "the file's type is not recognized and it is not plain text",
            ));
        }
        if !accepted.accepts(&detected) {
            return Err(FileError::unsupported(format!(
                "files of type {detected} are not accepted"
            )));
        }
        if let Some(claimed) = claimed {
            if !claim_fits(claimed, &detected) {
                return Err(FileError::unsupported(format!(
                    "the file is {detected}, not {}",
                    essence(claimed)
                )));
            }
        }
        Ok(detected)
    }
}

/// The type of a file from its first bytes, and whether the whole of it is
/// plain text. The built-in types are recognized by their exact signatures
/// (stricter than `infer`'s, which would take text starting with "GIF", or
/// with "%PDF" anywhere in its first KiB, for those); `infer` names the
/// rest. Text that opens with a tag is markup (HTML, XML, SVG), not plain
/// text, whatever comes after.
pub(crate) fn detect(prefix: &[u8], whole_is_text: bool) -> String {
    let signature = if prefix.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(PNG)
    } else if prefix.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(JPEG)
    } else if prefix.starts_with(b"GIF87a") || prefix.starts_with(b"GIF89a") {
        Some(GIF)
    } else if prefix.starts_with(b"RIFF") && prefix.get(8..12) == Some(b"WEBP") {
        Some(WEBP)
    } else if prefix.starts_with(b"%PDF-") {
        Some(PDF)
    } else {
        None
    };
    if let Some(signature) = signature {
        return signature.to_owned();
    }
    if let Some(kind) = infer::get(prefix) {
        let named = canonical(kind.mime_type());
        if !BUILT_IN_TYPES.contains(&named.as_str()) {
            return named;
        }
    }
    if !whole_is_text {
        return UNKNOWN.to_owned();
    }
    markup(prefix).unwrap_or(TEXT).to_owned()
}

fn markup(prefix: &[u8]) -> Option<&'static str> {
    let text = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let text = &text[start..];
    let opens_tag = text.first() == Some(&b'<')
        && text
            .get(1)
            .is_some_and(|&b| b.is_ascii_alphabetic() || matches!(b, b'!' | b'?' | b'/'));
    if !opens_tag {
        return None;
    }
    let svg = text.len() >= 4 && text[1..4].eq_ignore_ascii_case(b"svg");
    Some(if svg { SVG } else { HTML })
}

/// A claimed type fits when it names the detected type (allowing common
/// aliases such as `image/jpg`), says nothing (absent, empty,
/// `application/octet-stream`), or, for plain text, names a textual type
/// (`text/csv`, `text/markdown`, `application/json`...) other than markup.
/// HTML or SVG claimed for anything is a mismatch.
pub(crate) fn claim_fits(claimed: &str, detected: &str) -> bool {
    let claimed = canonical(claimed);
    if claimed.is_empty() || claimed == UNKNOWN || claimed == detected {
        return true;
    }
    const TEXTUAL: [&str; 6] = [
        "application/json",
        "application/javascript",
        "application/x-javascript",
        "application/yaml",
        "application/x-yaml",
        "application/x-sh",
    ];
    detected == TEXT
        && ((claimed.starts_with("text/") && claimed != HTML && claimed != "text/xml")
            || TEXTUAL.contains(&claimed.as_str()))
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The one name this crate uses for a type that goes by several.
fn canonical(content_type: &str) -> String {
    let essence = essence(content_type);
    let same = match essence.as_str() {
        "image/jpg" | "image/pjpeg" => JPEG,
        "image/x-png" | "image/apng" => PNG,
        "application/x-pdf" | "application/acrobat" => PDF,
        "application/x-zip-compressed" | "application/x-zip" => "application/zip",
        "audio/mp3" | "audio/x-mp3" | "audio/x-mpeg" => "audio/mpeg",
        "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "audio/wav",
        "audio/x-m4a" => "audio/m4a",
        _ => return essence,
    };
    same.to_owned()
}

/// Whether a stream of bytes is plain text: valid UTF-8 (checked across
/// chunk boundaries) with no control bytes other than tab, line feed,
/// vertical tab, form feed, carriage return and escape. Empty is text.
#[derive(Debug, Default)]
pub(crate) struct TextCheck {
    failed: bool,
    /// The start of a character cut by a chunk boundary.
    pending: [u8; 4],
    pending_len: usize,
}

impl TextCheck {
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) {
        if self.failed {
            return;
        }
        if chunk.iter().any(|&b| is_binary_control(b)) {
            self.failed = true;
            return;
        }
        if self.pending_len > 0 {
            let width = utf8_width(self.pending[0]);
            let take = (width - self.pending_len).min(chunk.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&chunk[..take]);
            self.pending_len += take;
            chunk = &chunk[take..];
            if self.pending_len < width {
                return;
            }
            if std::str::from_utf8(&self.pending[..width]).is_err() {
                self.failed = true;
                return;
            }
            self.pending_len = 0;
        }
        if let Err(error) = std::str::from_utf8(chunk) {
            if error.error_len().is_some() {
                self.failed = true;
                return;
            }
            let rest = &chunk[error.valid_up_to()..];
            self.pending[..rest.len()].copy_from_slice(rest);
            self.pending_len = rest.len();
        }
    }

    pub(crate) fn finish(&self) -> bool {
        !self.failed && self.pending_len == 0
    }
}

fn is_binary_control(byte: u8) -> bool {
    (byte < 0x20 && !matches!(byte, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | 0x1B)) || byte == 0x7F
}

/// The length of the UTF-8 sequence a lead byte starts; only called on the
/// lead byte of an incomplete (so multi-byte) sequence.
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_text(chunks: &[&[u8]]) -> bool {
        let mut check = TextCheck::default();
        for chunk in chunks {
            check.feed(chunk);
        }
        check.finish()
    }

    #[test]
    fn text_check_follows_characters_across_chunks() {
        let text = "naïve 李雷 🎉 done\n\tok\r\n".as_bytes();
        assert!(is_text(&[text]));
        // Every split point, including inside 2-, 3- and 4-byte characters.
        for cut in 0..text.len() {
            assert!(is_text(&[&text[..cut], &text[cut..]]), "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert!(is_text(&bytes));
        assert!(is_text(&[]));
    }

    #[test]
    fn text_check_refuses_binary() {
        assert!(!is_text(&[b"nul \0 inside"]));
        assert!(!is_text(&[b"bell \x07"]));
        assert!(!is_text(&[b"del \x7f"]));
        assert!(!is_text(&[b"latin-1 caf\xe9 au lait"]));
        // A character cut off at the end of the file.
        assert!(!is_text(&[&"🎉".as_bytes()[..3]]));
        // An invalid continuation after a chunk boundary.
        assert!(!is_text(&[&"é".as_bytes()[..1], b"x"]));
        // Overlong and surrogate encodings.
        assert!(!is_text(&[b"\xC0\xAF"]));
        assert!(!is_text(&[b"\xED\xA0", b"\x80"]));
        assert!(is_text(&[b"colors \x1b[31mred\x1b[0m\x0c"]));
    }

    #[test]
    fn detects_by_signature_not_by_loose_matches() {
        assert_eq!(detect(b"\x89PNG\r\n\x1a\n....", false), PNG);
        assert_eq!(detect(b"\xFF\xD8\xFF\xE0..", false), JPEG);
        assert_eq!(detect(b"GIF89a....", false), GIF);
        assert_eq!(detect(b"RIFF\0\0\0\0WEBPVP8 ", false), WEBP);
        assert_eq!(detect(b"%PDF-1.7\n", false), PDF);
        assert_eq!(detect(b"GIFs are fun", true), TEXT);
        assert_eq!(detect(b"notes about %PDF-1.7 files", true), TEXT);
        assert_eq!(detect(b"12345678WEBP", true), TEXT);
        let padded = |start: &[u8]| [start, &[0u8; 128][..]].concat();
        assert_eq!(
            detect(&padded(b"\x7fELF\x02\x01\x01"), false),
            "application/x-executable"
        );
        assert_eq!(detect(&padded(b"PK\x03\x04\x14"), false), "application/zip");
        assert_eq!(detect(b"\0\x01\x02 no signature", false), UNKNOWN);
    }

    #[test]
    fn markup_is_not_plain_text() {
        assert_eq!(detect(b"<!DOCTYPE html><p>hi", true), HTML);
        assert_eq!(detect(b"\xEF\xBB\xBF  \n<html>", true), HTML);
        assert_eq!(
            detect(b"<svg xmlns='http://www.w3.org/2000/svg'>", true),
            SVG
        );
        assert_eq!(detect(b"<SVG>", true), SVG);
        assert_eq!(detect(b"<?xml version='1.0'?><svg/>", true), "text/xml");
        assert_eq!(detect(b"<!-- x --><svg/>", true), HTML);
        assert_eq!(detect(b"<3 you", true), TEXT);
        assert_eq!(detect(b"a < b > c", true), TEXT);
    }

    #[test]
    fn claims() {
        assert!(claim_fits("image/png", PNG));
        assert!(claim_fits("IMAGE/PNG; foo=bar", PNG));
        assert!(claim_fits("image/jpg", JPEG));
        assert!(claim_fits("image/pjpeg", JPEG));
        assert!(claim_fits("", PNG));
        assert!(claim_fits("application/octet-stream", PDF));
        assert!(claim_fits("text/csv", TEXT));
        assert!(claim_fits("text/markdown; charset=utf-8", TEXT));
        assert!(claim_fits("application/json", TEXT));
        assert!(claim_fits(
            "application/x-zip-compressed",
            "application/zip"
        ));

        assert!(!claim_fits("image/png", PDF));
        assert!(!claim_fits("image/png", JPEG));
        assert!(!claim_fits("text/plain", PNG));
        assert!(!claim_fits("text/html", TEXT));
        assert!(!claim_fits("image/svg+xml", TEXT));
        assert!(!claim_fits("application/pdf", TEXT));
    }

    fn sniff(bytes: &[u8], claimed: Option<&str>, extra: &[&str]) -> Result<String, FileError> {
        let mut sniffer = Sniffer::default();
        for chunk in bytes.chunks(7) {
            sniffer.feed(chunk);
        }
        sniffer.finish(claimed, &AcceptedTypes::new(extra))
    }

    #[test]
    fn accepted_types_and_claims_together() {
        assert_eq!(sniff(b"hello", Some("text/plain"), &[]).unwrap(), TEXT);
        let html = sniff(b"<html><script>alert(1)</script>", Some("image/png"), &[]);
        assert!(
            matches!(html, Err(FileError::UnsupportedMediaType(_))),
            "{html:?}"
        );
        let svg = sniff(b"<svg onload='alert(1)'/>", Some("image/png"), &[]);
        assert!(
            matches!(svg, Err(FileError::UnsupportedMediaType(_))),
            "{svg:?}"
        );
        let zip = b"PK\x03\x04\x14\0\0\0\0\0";
        assert!(sniff(zip, None, &[]).is_err());
        assert_eq!(
            sniff(zip, None, &["application/zip"]).unwrap(),
            "application/zip"
        );
        assert_eq!(
            sniff(
                zip,
                Some("application/x-zip-compressed"),
                &["Application/Zip"]
            )
            .unwrap(),
            "application/zip"
        );
        let mismatch = sniff(zip, Some("image/png"), &["application/zip"]).unwrap_err();
        assert_eq!(
            mismatch.to_string(),
            "the file is application/zip, not image/png"
        );
    }
}
