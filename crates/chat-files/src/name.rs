//! File names as the client sent them, made safe to store and to offer
//! back in `Content-Disposition`.

/// Longest stored name, in UTF-8 bytes (what most file systems allow).
pub const MAX_NAME_BYTES: usize = 255;
/// The name of a file whose own name is missing or has nothing left.
pub const FALLBACK_NAME: &str = "file";
/// An extension longer than this is not kept when a long name is cut.
const MAX_KEPT_EXTENSION_BYTES: usize = 32;

/// Cleans a client's file name: keeps only the last path component (after
/// the last `/` or `\`, so `C:\Users\me\cat.png` and `../../cat.png` are
/// `cat.png`); removes control, format (bidirectional overrides, zero-width)
/// and line/paragraph separator characters, as display names are cleaned;
/// trims spaces, and dots at the end (which Windows drops, so `a.exe.`
/// would become `a.exe`); cuts it to [`MAX_NAME_BYTES`] on a character
/// boundary, keeping the extension when there is a short one. Nothing left
/// (or no name at all) gives [`FALLBACK_NAME`].
pub fn sanitize_file_name(raw: Option<&str>) -> String {
    let cleaned = raw
        .and_then(|raw| chat_proto::client::display_name(raw, usize::MAX))
        .unwrap_or_default();
    let last = cleaned.rsplit(['/', '\\']).next().unwrap_or_default();
    let name = trim_name(last);
    if name.is_empty() {
        return FALLBACK_NAME.to_owned();
    }
    shorten(name)
}

fn trim_name(name: &str) -> &str {
    name.trim()
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

fn shorten(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_owned();
    }
    if let Some((stem, extension)) = name.rsplit_once('.') {
        if !stem.is_empty() && extension.len() <= MAX_KEPT_EXTENSION_BYTES {
            let stem = trim_name(cut(stem, MAX_NAME_BYTES - extension.len() - 1));
            if !stem.is_empty() {
                return format!("{stem}.{extension}");
            }
        }
    }
    trim_name(cut(name, MAX_NAME_BYTES)).to_owned()
}

fn cut(text: &str, max_bytes: usize) -> &str {
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(raw: &str) -> String {
        sanitize_file_name(Some(raw))
    }

    #[test]
    fn keeps_ordinary_names() {
        assert_eq!(clean("cat.png"), "cat.png");
        assert_eq!(clean("Relatório final (2).pdf"), "Relatório final (2).pdf");
        assert_eq!(clean("李雷的照片.jpg"), "李雷的照片.jpg");
        assert_eq!(clean(".profile"), ".profile");
    }

    #[test]
    fn drops_path_components_of_both_kinds() {
        assert_eq!(clean("../../etc/passwd"), "passwd");
        assert_eq!(clean("C:\\Users\\me\\cat.png"), "cat.png");
        assert_eq!(clean("a/b\\c/d.txt"), "d.txt");
        assert_eq!(clean("dir/"), FALLBACK_NAME);
        assert_eq!(clean(".."), FALLBACK_NAME);
        assert_eq!(clean("/"), FALLBACK_NAME);
    }

    #[test]
    fn drops_controls_and_reordering_characters() {
        // U+202E would show "evil\u{202E}gnp.exe" as "evilexe.png".
        assert_eq!(clean("evil\u{202E}gnp.exe"), "evilgnp.exe");
        assert_eq!(clean("a\u{0}b\r\nc\u{7}.txt"), "abc.txt");
        assert_eq!(clean("zero\u{200B}width\u{2066}.txt"), "zerowidth.txt");
        assert_eq!(clean("line\u{2028}sep.txt"), "linesep.txt");
        assert_eq!(clean("\u{202E}\u{200B}"), FALLBACK_NAME);
    }

    #[test]
    fn trims_spaces_and_trailing_dots() {
        assert_eq!(clean("  report.pdf  "), "report.pdf");
        assert_eq!(clean("run.exe. . "), "run.exe");
        assert_eq!(clean("   "), FALLBACK_NAME);
    }

    #[test]
    fn missing_or_empty_names_fall_back() {
        assert_eq!(sanitize_file_name(None), FALLBACK_NAME);
        assert_eq!(clean(""), FALLBACK_NAME);
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary_keeping_the_extension() {
        let long = format!("{}.jpeg", "é".repeat(200));
        let name = clean(&long);
        assert!(name.len() <= MAX_NAME_BYTES, "{}", name.len());
        assert!(name.ends_with(".jpeg"));
        assert!(name.trim_end_matches(".jpeg").chars().all(|c| c == 'é'));

        let no_extension = "猫".repeat(100);
        let name = clean(&no_extension);
        assert!(name.len() <= MAX_NAME_BYTES);
        assert_eq!(name.chars().count(), MAX_NAME_BYTES / 3);

        let long_extension = format!("a.{}", "x".repeat(300));
        let name = clean(&long_extension);
        assert_eq!(name.len(), MAX_NAME_BYTES);
        assert!(name.starts_with("a.x"));

        let exact = "a".repeat(MAX_NAME_BYTES);
        assert_eq!(clean(&exact), exact);
    }
}
