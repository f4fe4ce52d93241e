//! Images through the whole upload: the pixel limit before decoding,
//! thumbnails, and location metadata cut out of what is stored.

mod common;

use bytes::Bytes;
use chat_files::{Blob, ContentHash, Dimensions, StoredFile, UploadConfig};
use common::*;
use image::metadata::Orientation;
use image::{DynamicImage, GenericImageView, ImageFormat, Rgba, RgbaImage};
use img_parts::jpeg::{markers, Jpeg, JpegSegment};
use img_parts::png::{Png, PngChunk};
use img_parts::riff::{RiffChunk, RiffContent};
use img_parts::webp::WebP;
use img_parts::ImageEXIF;

/// A PNG whose header claims `width` x `height` pixels, with the one-pixel
/// IDAT of a 1x1 image: a few dozen bytes that would decode to gigabytes.
fn bomb_png(width: u32, height: u32) -> Vec<u8> {
    let tiny = encode(&DynamicImage::new_luma8(1, 1), ImageFormat::Png);
    let mut png = Png::from_bytes(tiny.into()).unwrap();
    let mut header = png.chunk_by_type(*b"IHDR").unwrap().contents().to_vec();
    header[0..4].copy_from_slice(&width.to_be_bytes());
    header[4..8].copy_from_slice(&height.to_be_bytes());
    let at = png
        .chunks()
        .iter()
        .position(|chunk| chunk.kind() == *b"IHDR")
        .unwrap();
    png.chunks_mut()[at] = PngChunk::new(*b"IHDR", header.into());
    png.encoder().bytes().to_vec()
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_from_its_header() {
    let store = TempStore::new(UploadConfig::default()).await;
    let bomb = bomb_png(50_000, 50_000);
    assert!(bomb.len() < 200, "{} bytes", bomb.len());
    let refused = store
        .upload_file("bomb.png", "image/png", &bomb)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            chat_files::FileError::ImageTooLarge {
                width: 50_000,
                height: 50_000,
                max_pixels: 40_000_000
            }
        ),
        "{refused:?}"
    );
    assert_eq!(refused.code().as_str(), "image_too_large");
    assert_eq!(refused.status(), http::StatusCode::PAYLOAD_TOO_LARGE);

    // A GIF's logical screen is the same kind of claim.
    let mut gif = encode(&DynamicImage::new_rgba8(1, 1), ImageFormat::Gif);
    gif[6..10].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    let refused = store
        .upload_file("bomb.gif", "image/gif", &gif)
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "image_too_large", "{refused}");

    // The limit is configurable.
    let strict = TempStore::new(UploadConfig {
        max_image_pixels: 1000,
        ..UploadConfig::default()
    })
    .await;
    let png = encode(&picture(40, 30), ImageFormat::Png);
    assert_eq!(
        strict
            .upload_file("a.png", "image/png", &png)
            .await
            .unwrap_err()
            .code()
            .as_str(),
        "image_too_large"
    );
    let png = encode(&picture(40, 25), ImageFormat::Png);
    assert!(strict.upload_file("a.png", "image/png", &png).await.is_ok());

    assert!(store.blobs().is_empty(), "{:?}", store.blobs());
    assert_eq!(store.staged_files(), 0);
}

#[tokio::test]
async fn an_image_that_does_not_decode_is_refused() {
    let store = TempStore::new(UploadConfig::default()).await;
    let png = encode(&picture(64, 64), ImageFormat::Png);
    let mut png = Png::from_bytes(png.into()).unwrap();
    let at = png
        .chunks()
        .iter()
        .position(|chunk| chunk.kind() == *b"IDAT")
        .unwrap();
    png.chunks_mut()[at] = PngChunk::new(*b"IDAT", Bytes::from_static(b"not zlib data at all"));
    let broken = png.encoder().bytes();
    let refused = store
        .upload_file("broken.png", "image/png", &broken)
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "invalid_upload", "{refused}");
    let header_only = &broken[..40];
    let refused = store
        .upload_file("cut.png", "image/png", header_only)
        .await
        .unwrap_err();
    assert_eq!(refused.code().as_str(), "invalid_upload", "{refused}");
    assert!(store.blobs().is_empty(), "{:?}", store.blobs());
}

async fn thumbnail_of(store: &TempStore, stored: &StoredFile) -> DynamicImage {
    let bytes = store
        .store()
        .read_to_bytes(Blob::Thumbnail(stored.sha256))
        .await
        .unwrap();
    assert_eq!(bytes.len() as u64, stored.thumbnail.unwrap().size);
    image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg).expect("thumbnails are JPEG")
}

#[tokio::test]
async fn thumbnails_fit_320_pixels_keep_their_shape_and_never_grow() {
    let store = TempStore::new(UploadConfig::default()).await;
    for (format, (width, height), expected) in [
        (ImageFormat::Png, (1000, 500), (320, 160)),
        (ImageFormat::Jpeg, (300, 900), (107, 320)),
        (ImageFormat::WebP, (640, 640), (320, 320)),
        (ImageFormat::Gif, (100, 80), (100, 80)),
    ] {
        let bytes = encode(&picture(width, height), format);
        let stored = store.upload_file("p", "", &bytes).await.unwrap();
        assert_eq!(stored.dimensions, Some(Dimensions { width, height }));
        let thumbnail = stored.thumbnail.unwrap();
        assert_eq!(
            (thumbnail.dimensions.width, thumbnail.dimensions.height),
            expected,
            "{format:?}"
        );
        let decoded = thumbnail_of(&store, &stored).await;
        assert_eq!(decoded.dimensions(), expected, "{format:?}");
    }
}

#[tokio::test]
async fn transparent_images_get_thumbnails_on_white() {
    let store = TempStore::new(UploadConfig::default()).await;
    let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(400, 200, Rgba([0, 0, 0, 0])));
    let stored = store
        .upload_file("clear.png", "image/png", &encode(&clear, ImageFormat::Png))
        .await
        .unwrap();
    let thumbnail = thumbnail_of(&store, &stored).await.to_rgb8();
    assert_eq!(thumbnail.dimensions(), (320, 160));
    assert!(
        thumbnail
            .pixels()
            .all(|pixel| pixel.0.iter().all(|&c| c >= 250)),
        "not white"
    );
}

/// EXIF (a TIFF structure, little-endian) with an orientation and a GPS
/// block placing the picture at 48°51'29.640123" N.
fn exif_with_gps(orientation: u16) -> Vec<u8> {
    let mut tiff = b"II\x2A\0\x08\0\0\0".to_vec();
    let entry = |tiff: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: [u8; 4]| {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&kind.to_le_bytes());
        tiff.extend_from_slice(&count.to_le_bytes());
        tiff.extend_from_slice(&value);
    };
    // IFD0 at 8: orientation, and where the GPS IFD is (38).
    tiff.extend_from_slice(&2u16.to_le_bytes());
    let mut value = [0; 4];
    value[..2].copy_from_slice(&orientation.to_le_bytes());
    entry(&mut tiff, 0x0112, 3, 1, value);
    entry(&mut tiff, 0x8825, 4, 1, 38u32.to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(tiff.len(), 38);
    // GPS IFD: latitude reference and latitude (three rationals at 68).
    tiff.extend_from_slice(&2u16.to_le_bytes());
    entry(&mut tiff, 0x0001, 2, 2, *b"N\0\0\0");
    entry(&mut tiff, 0x0002, 5, 3, 68u32.to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(tiff.len(), 68);
    tiff.extend_from_slice(&latitude());
    tiff
}

fn latitude() -> Vec<u8> {
    [(48u32, 1u32), (51, 1), (29_640_123, 1_000_000)]
        .iter()
        .flat_map(|(n, d)| [n.to_le_bytes(), d.to_le_bytes()].concat())
        .collect()
}

const XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x='adobe:ns:meta/'><exif:GPSLatitude>48,51.494N</exif:GPSLatitude></x:xmpmeta>";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

async fn stored_bytes(store: &TempStore, stored: &StoredFile) -> Bytes {
    let bytes = store
        .store()
        .read_to_bytes(Blob::Original(stored.sha256))
        .await
        .unwrap();
    // What the answer says is what is stored and served.
    assert_eq!(ContentHash::of(&bytes), stored.sha256);
    assert_eq!(bytes.len() as u64, stored.size);
    bytes
}

#[tokio::test]
async fn gps_and_other_metadata_are_cut_out_of_jpeg() {
    let exif = exif_with_gps(6);
    assert_eq!(
        Orientation::from_exif_chunk(&exif),
        Some(Orientation::Rotate90)
    );
    let plain = encode(&picture(64, 48), ImageFormat::Jpeg);
    let mut jpeg = Jpeg::from_bytes(plain.into()).unwrap();
    jpeg.set_exif(Some(exif.into()));
    jpeg.segments_mut().insert(
        1,
        JpegSegment::new_with_contents(markers::APP1, Bytes::from_static(XMP)),
    );
    jpeg.segments_mut().insert(
        1,
        JpegSegment::new_with_contents(markers::COM, Bytes::from_static(b"shot at home")),
    );
    let upload = jpeg.encoder().bytes();
    assert!(contains(&upload, &latitude()));

    let store = TempStore::new(UploadConfig::default()).await;
    let stored = store
        .upload_file("photo.jpg", "image/jpeg", &upload)
        .await
        .unwrap();
    let bytes = stored_bytes(&store, &stored).await;
    assert_ne!(stored.sha256, ContentHash::of(&upload));
    assert!(!contains(&bytes, &latitude()), "GPS latitude still stored");
    assert!(
        !contains(&bytes, b"http://ns.adobe.com/xap/1.0/"),
        "XMP still stored"
    );
    assert!(!contains(&bytes, b"shot at home"), "comment still stored");
    // Only the orientation is left, so the photo still shows upright.
    let kept = Jpeg::from_bytes(bytes.clone())
        .unwrap()
        .exif()
        .expect("orientation kept");
    assert_eq!(
        Orientation::from_exif_chunk(&kept),
        Some(Orientation::Rotate90)
    );
    assert!(kept.len() < 32, "{} bytes of EXIF left", kept.len());
    // The image data is untouched and still decodes.
    let decoded = image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg).unwrap();
    assert_eq!(decoded.dimensions(), (64, 48));
    // Sizes are as shown: turned a quarter, the photo is taller than wide.
    assert_eq!(
        stored.dimensions,
        Some(Dimensions {
            width: 48,
            height: 64
        })
    );
    assert_eq!(thumbnail_of(&store, &stored).await.dimensions(), (48, 64));

    // The same upload again is the same stored file.
    let again = store
        .upload_file("photo.jpg", "image/jpeg", &upload)
        .await
        .unwrap();
    assert_eq!((again.sha256, again.newly_stored), (stored.sha256, false));
}

#[tokio::test]
async fn images_appended_after_a_jpeg_are_cut_off_with_their_metadata() {
    let first = encode(&picture(32, 32), ImageFormat::Jpeg);
    let mut second = Jpeg::from_bytes(encode(&picture(8, 8), ImageFormat::Jpeg).into()).unwrap();
    second.set_exif(Some(exif_with_gps(1).into()));
    let upload = [first.clone(), second.encoder().bytes().to_vec()].concat();
    let store = TempStore::new(UploadConfig::default()).await;
    let stored = store
        .upload_file("burst.jpg", "image/jpeg", &upload)
        .await
        .unwrap();
    let bytes = stored_bytes(&store, &stored).await;
    assert!(!contains(&bytes, &latitude()));
    assert_eq!(&bytes[..], &first[..]);
}

#[tokio::test]
async fn gps_and_text_chunks_are_cut_out_of_png() {
    let mut png = Png::from_bytes(encode(&picture(60, 40), ImageFormat::Png).into()).unwrap();
    png.set_exif(Some(exif_with_gps(1).into()));
    let text = PngChunk::new(*b"tEXt", Bytes::from_static(b"Comment\0shot at home"));
    let xmp = PngChunk::new(
        *b"iTXt",
        Bytes::from([&b"XML:com.adobe.xmp\0\0\0\0\0"[..], &XMP[29..]].concat()),
    );
    png.chunks_mut().insert(1, text);
    png.chunks_mut().insert(1, xmp);
    let upload = png.encoder().bytes();

    let store = TempStore::new(UploadConfig::default()).await;
    let stored = store
        .upload_file("shot.png", "image/png", &upload)
        .await
        .unwrap();
    let bytes = stored_bytes(&store, &stored).await;
    assert!(!contains(&bytes, &latitude()));
    assert!(!contains(&bytes, b"shot at home"));
    assert!(!contains(&bytes, b"GPSLatitude"));
    let parsed = Png::from_bytes(bytes.clone()).unwrap();
    assert!(
        parsed.exif().is_none(),
        "orientation 1 needs no EXIF at all"
    );
    let decoded = image::load_from_memory_with_format(&bytes, ImageFormat::Png).unwrap();
    assert_eq!(decoded.to_rgba8(), picture(60, 40).to_rgba8());
    assert_eq!(
        stored.dimensions,
        Some(Dimensions {
            width: 60,
            height: 40
        })
    );
}

#[tokio::test]
async fn gps_and_xmp_are_cut_out_of_webp() {
    let mut webp = WebP::from_bytes(encode(&picture(60, 40), ImageFormat::WebP).into()).unwrap();
    webp.chunks_mut().push(RiffChunk::new(
        *b"XMP ",
        RiffContent::Data(Bytes::from_static(&XMP[29..])),
    ));
    webp.set_exif(Some(exif_with_gps(8).into()));
    let upload = webp.encoder().bytes();
    assert!(contains(&upload, &latitude()));

    let store = TempStore::new(UploadConfig::default()).await;
    let stored = store
        .upload_file("shot.webp", "image/webp", &upload)
        .await
        .unwrap();
    let bytes = stored_bytes(&store, &stored).await;
    assert!(!contains(&bytes, &latitude()));
    assert!(!contains(&bytes, b"GPSLatitude"));
    let parsed = WebP::from_bytes(bytes.clone()).unwrap();
    assert!(parsed.chunk_by_id(*b"XMP ").is_none());
    let kept = parsed.exif().expect("orientation kept");
    assert_eq!(
        Orientation::from_exif_chunk(&kept),
        Some(Orientation::Rotate270)
    );
    let decoded = image::load_from_memory_with_format(&bytes, ImageFormat::WebP).unwrap();
    assert_eq!(decoded.dimensions(), (60, 40));
    assert_eq!(
        stored.dimensions,
        Some(Dimensions {
            width: 40,
            height: 60
        })
    );
}
