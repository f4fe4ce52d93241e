//! Raster images: dimensions from the header, the pixel limit checked
//! before any decoding, location and other metadata cut out of the
//! container without re-encoding, and thumbnails.
//!
//! Everything here is CPU work on bytes already in memory (an image is at
//! most `max_upload_bytes`); callers run it on the blocking pool.

use std::io::Cursor;

use bytes::Bytes;
use image::metadata::Orientation;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use img_parts::jpeg::{markers, Jpeg};
use img_parts::png::Png;
use img_parts::riff::{RiffChunk, RiffContent};
use img_parts::webp::WebP;
use img_parts::ImageEXIF;

use crate::{ContentHash, FileError};

/// Thumbnails are JPEG whatever the original (transparent areas on white).
pub const THUMBNAIL_CONTENT_TYPE: &str = "image/jpeg";

/// An image ready to be stored: its metadata cut out, and its size as it
/// is displayed (EXIF orientation applied).
#[derive(Debug)]
pub(crate) struct PreparedImage {
    pub bytes: Bytes,
    pub sha256: ContentHash,
    pub width: u32,
    pub height: u32,
    orientation: Orientation,
    format: ImageFormat,
    /// The dimensions in the header, which decoding must not exceed.
    stored_width: u32,
    stored_height: u32,
}

/// A generated thumbnail.
#[derive(Debug)]
pub(crate) struct EncodedThumbnail {
    pub bytes: Bytes,
    pub width: u32,
    pub height: u32,
}

/// Reads the header, refuses more than `max_pixels`, strips metadata.
/// `sha256` is that of the input when nothing had to be removed.
pub(crate) fn prepare(
    original: Bytes,
    sha256: ContentHash,
    format: ImageFormat,
    max_pixels: u64,
) -> Result<PreparedImage, FileError> {
    let (width, height) = ImageReader::with_format(Cursor::new(&original[..]), format)
        .into_dimensions()
        .map_err(|_| FileError::invalid("the image's header could not be read"))?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(FileError::ImageTooLarge {
            width,
            height,
            max_pixels,
        });
    }
    let (bytes, orientation) = strip_metadata(&original, format)?;
    let sha256 = if bytes == original {
        sha256
    } else {
        ContentHash::of(&bytes)
    };
    let (shown_width, shown_height) = if swaps_sides(orientation) {
        (height, width)
    } else {
        (width, height)
    };
    Ok(PreparedImage {
        bytes,
        sha256,
        width: shown_width,
        height: shown_height,
        orientation,
        format,
        stored_width: width,
        stored_height: height,
    })
}

/// The size of the thumbnail of an image shown at `width` x `height`:
/// longest side `max_side`, aspect ratio kept, never larger than the image.
pub(crate) fn thumbnail_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side {
        return (width, height);
    }
    let scale = |side: u32| {
        let scaled =
            (u64::from(side) * u64::from(max_side) + u64::from(longest) / 2) / u64::from(longest);
        (scaled as u32).max(1)
    };
    (scale(width), scale(height))
}

/// Decodes the (already size-checked) image under [`Limits`] that allow no
/// more than its header promised, and encodes its thumbnail.
pub(crate) fn thumbnail(
    image: &PreparedImage,
    max_side: u32,
) -> Result<EncodedThumbnail, FileError> {
    let mut reader = ImageReader::with_format(Cursor::new(&image.bytes[..]), image.format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(image.stored_width);
    limits.max_image_height = Some(image.stored_height);
    // Room for the decoded pixels at 16 bits per RGBA channel plus the
    // decoder's own buffers; the pixel count was checked from the header.
    let pixels = u64::from(image.stored_width) * u64::from(image.stored_height);
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let mut decoded = reader
        .decode()
        .map_err(|_| FileError::invalid("the image could not be decoded"))?;
    decoded.apply_orientation(image.orientation);
    let (width, height) = thumbnail_size(decoded.width(), decoded.height(), max_side);
    let small = if (width, height) == (decoded.width(), decoded.height()) {
        decoded
    } else {
        decoded.thumbnail_exact(width, height)
    };
    let rgb = on_white(&small);
    let mut out = Vec::with_capacity(32 * 1024);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&rgb)
        .map_err(|error| FileError::store(format!("thumbnail encoding failed: {error}")))?;
    Ok(EncodedThumbnail {
        bytes: out.into(),
        width,
        height,
    })
}

fn on_white(image: &DynamicImage) -> image::RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let blend = |c: u8| {
            let (c, a) = (u32::from(c), u32::from(a));
            ((c * a + 255 * (255 - a) + 127) / 255) as u8
        };
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Cuts out what can say where (and by whom, and with what) a picture was
/// taken, leaving the image data untouched: EXIF (GPS included), XMP, IPTC
/// and comments in JPEG; `eXIf`, text chunks and `tIME` in PNG; `EXIF` and
/// `XMP ` in WebP. Colour profiles stay. Only the EXIF orientation
/// survives, in an EXIF block of its own, so photos still show upright.
/// GIF has no standard place for such metadata and is stored as sent.
///
/// The same input always gives the same output, so identical uploads are
/// still stored once.
pub(crate) fn strip_metadata(
    original: &Bytes,
    format: ImageFormat,
) -> Result<(Bytes, Orientation), FileError> {
    let unreadable = |_| FileError::invalid("the image's structure could not be read");
    let orientation_of = |exif: Option<Bytes>| {
        exif.and_then(|exif| Orientation::from_exif_chunk(&exif))
            .unwrap_or(Orientation::NoTransforms)
    };
    let kept_exif = |orientation: Orientation| {
        (orientation != Orientation::NoTransforms).then(|| orientation_only_exif(orientation))
    };
    match format {
        ImageFormat::Jpeg => {
            let mut jpeg = Jpeg::from_bytes(primary_image(original)).map_err(unreadable)?;
            let orientation = orientation_of(jpeg.exif());
            jpeg.set_exif(None);
            jpeg.segments_mut().retain(|segment| {
                let marker = segment.marker();
                // APP1 also holds XMP, APP13 the IPTC record. The MPF index
                // (APP2 "MPF\0") lists the images after this one, which are
                // cut off with whatever metadata they carry.
                let mpf = marker == markers::APP2 && segment.contents().starts_with(b"MPF\0");
                !(marker == markers::APP1
                    || marker == markers::APP13
                    || marker == markers::COM
                    || mpf)
            });
            jpeg.set_exif(kept_exif(orientation));
            Ok((jpeg.encoder().bytes(), orientation))
        }
        ImageFormat::Png => {
            let mut png = Png::from_bytes(original.clone()).map_err(unreadable)?;
            let orientation = orientation_of(png.exif());
            png.chunks_mut().retain(|chunk| {
                !matches!(
                    &chunk.kind(),
                    b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME"
                )
            });
            png.set_exif(kept_exif(orientation));
            Ok((png.encoder().bytes(), orientation))
        }
        ImageFormat::WebP => {
            let mut webp = WebP::from_bytes(original.clone()).map_err(unreadable)?;
            let orientation = orientation_of(webp.exif());
            webp.remove_chunks_by_id(img_parts::webp::CHUNK_XMP);
            webp.set_exif(kept_exif(orientation));
            clear_vp8x_xmp_flag(&mut webp);
            Ok((webp.encoder().bytes(), orientation))
        }
        _ => Ok((original.clone(), Orientation::NoTransforms)),
    }
}

/// `img-parts` brings the VP8X header's ICC and EXIF flags in line with
/// the chunks, not its XMP flag; decoders look for the XMP chunk it
/// announces and fail when it is gone.
fn clear_vp8x_xmp_flag(webp: &mut WebP) {
    const XMP_FLAG: u8 = 0b0000_0100;
    let vp8x = webp
        .chunks_mut()
        .iter_mut()
        .find(|chunk| chunk.id() == img_parts::webp::CHUNK_VP8X);
    if let Some(RiffContent::Data(data)) = vp8x.map(RiffChunk::content_mut) {
        if data.first().is_some_and(|flags| flags & XMP_FLAG != 0) {
            let mut cleared = data.to_vec();
            cleared[0] &= !XMP_FLAG;
            *data = cleared.into();
        }
    }
}

/// A TIFF structure (what EXIF blocks hold) with one entry, the orientation.
fn orientation_only_exif(orientation: Orientation) -> Bytes {
    let mut tiff = Vec::with_capacity(26);
    tiff.extend_from_slice(b"MM\0\x2A"); // big-endian TIFF
    tiff.extend_from_slice(&8u32.to_be_bytes()); // first IFD right after the header
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry:
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation,
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT,
    tiff.extend_from_slice(&1u32.to_be_bytes()); // one value,
    tiff.extend_from_slice(&u16::from(orientation.to_exif()).to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // (a SHORT fills the value field from the left)
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    tiff.into()
}

/// The JPEG up to the end of its first image. Cameras and phones append
/// more images after it (MPF: previews, depth and gain maps), each with
/// metadata of its own; `img-parts` keeps them as part of the last scan.
/// When no end is found the whole input is returned.
fn primary_image(jpeg: &Bytes) -> Bytes {
    let data = &jpeg[..];
    let mut at = 2; // after SOI
    while at + 1 < data.len() {
        if data[at] != 0xFF {
            at += 1;
            continue;
        }
        match data[at + 1] {
            // Fill byte: the marker starts at the next 0xFF.
            0xFF => at += 1,
            // Stuffed 0xFF in scan data, restart markers, TEM: no length.
            0x00 | 0xD0..=0xD7 | 0x01 => at += 2,
            markers::EOI => return jpeg.slice(..at + 2),
            _ => {
                let Some(length) = data.get(at + 2..at + 4) else {
                    break;
                };
                at += 2 + usize::from(u16::from_be_bytes([length[0], length[1]]));
            }
        }
    }
    jpeg.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnail_sizes_keep_the_ratio_and_never_grow() {
        assert_eq!(thumbnail_size(4000, 3000, 320), (320, 240));
        assert_eq!(thumbnail_size(3000, 4000, 320), (240, 320));
        assert_eq!(thumbnail_size(1000, 1000, 320), (320, 320));
        assert_eq!(thumbnail_size(100, 50, 320), (100, 50));
        assert_eq!(thumbnail_size(320, 10, 320), (320, 10));
        assert_eq!(thumbnail_size(100_000, 1, 320), (320, 1));
        assert_eq!(thumbnail_size(641, 321, 320), (320, 160));
    }

    #[test]
    fn the_kept_exif_block_says_the_orientation() {
        for value in 1..=8 {
            let orientation = Orientation::from_exif(value).unwrap();
            let exif = orientation_only_exif(orientation);
            assert_eq!(Orientation::from_exif_chunk(&exif), Some(orientation));
        }
    }

    #[test]
    fn primary_image_ends_at_the_first_end_of_image() {
        let segment = |marker: u8, contents: &[u8]| {
            let mut out = vec![0xFF, marker];
            out.extend_from_slice(&(contents.len() as u16 + 2).to_be_bytes());
            out.extend_from_slice(contents);
            out
        };
        // An APP1 whose contents hold an EOI-looking pair, a scan with a
        // stuffed 0xFF and a restart marker, then a second image.
        let first = [
            vec![0xFF, 0xD8],
            segment(0xE1, b"Exif\0\0\xFF\xD9"),
            segment(0xDA, &[1, 2, 3]),
            vec![0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD9],
        ]
        .concat();
        let second = [
            vec![0xFF, 0xD8],
            segment(0xE1, b"Exif\0\0gps"),
            vec![0xFF, 0xD9],
        ]
        .concat();
        let file = Bytes::from([first.clone(), second].concat());
        assert_eq!(&primary_image(&file)[..], &first[..]);
        let truncated = Bytes::from(first[..first.len() - 2].to_vec());
        assert_eq!(primary_image(&truncated), truncated);
    }
}
