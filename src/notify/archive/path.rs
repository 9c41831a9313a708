//! Where an archive's files go under `to`: the folder its path template
//! renders to, and a name for each file, made safe. Both come from a
//! payload (a model's name, a job's id, the last part of a file's URL),
//! so nothing in them may climb out of `to`, hide a control character in
//! a name, or make a name no file system or object store takes.
//!
//! Rather than refusing, what could do harm is replaced: an alert's archive
//! is kept under a plain name rather than lost over a strange one.

use super::source::Named;

/// The longest name of one folder or file (most file systems' limit).
const MAX_SEGMENT: usize = 255;

/// The longest key an object store takes (S3's 1,024 bytes), folder and
/// file name together; a folder leaves room for the names under it.
pub const MAX_FOLDER: usize = 768;

/// The names the archive writes itself.
pub const RESERVED: [&str; 2] = ["job.json", "manifest.json"];

/// What marks a temporary file (`<name>.part-<random>`) while it is
/// written: no name given here holds it, so sweeping temporary files
/// never deletes an archived one.
pub const PART: &str = ".part-";

/// Why a rendered folder cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error(
        "the archive's path template rendered an empty folder; make it name at least one folder (default \"{{{{kind}}}}/{{{{model}}}}/{{{{id}}}}/\")"
    )]
    Empty,
    #[error(
        "the archive's path template rendered a folder of {0} bytes, over {MAX_FOLDER}; use shorter parts"
    )]
    TooLong(usize),
}

/// `rendered` (the path template's output) as a relative folder, `/`
/// separated and ending in `/`: empty parts dropped, `.` and `..` made
/// plain names, control characters and `\` replaced, each part cut to
/// [`MAX_SEGMENT`] bytes.
pub fn folder(rendered: &str) -> Result<String, PathError> {
    let parts: Vec<String> = rendered
        .split('/')
        .filter(|p| !p.trim().is_empty())
        .map(segment)
        .collect();
    if parts.is_empty() {
        return Err(PathError::Empty);
    }
    let folder = parts.join("/") + "/";
    if folder.len() > MAX_FOLDER {
        return Err(PathError::TooLong(folder.len()));
    }
    Ok(folder)
}

/// One part of a path, made safe and cut to [`MAX_SEGMENT`].
fn segment(part: &str) -> String {
    let mut clean = clean(part);
    cut(&mut clean, MAX_SEGMENT);
    clean
}

/// One part of a path, made safe.
fn clean(part: &str) -> String {
    let mut clean: String = part
        .trim()
        .chars()
        .map(|c| {
            if c.is_control() || c == '\\' || c == '/' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if clean == "." || clean == ".." {
        clean = format!("_{clean}");
    }
    clean
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A file name for each of `files`, in order: the last part of its URL's
/// path, decoded and made safe (`file` when there is none), each name
/// once (`out.png`, `out-2.png`), and never one the archive writes itself.
pub fn file_names(files: &[Named]) -> Vec<String> {
    let mut taken: std::collections::HashSet<String> =
        RESERVED.iter().map(|r| r.to_string()).collect();
    files
        .iter()
        .map(|f| {
            let base = url::Url::parse(&f.url)
                .ok()
                .and_then(|u| {
                    u.path_segments()
                        .and_then(|mut s| s.next_back().map(str::to_owned))
                })
                .map(|last| {
                    percent_encoding::percent_decode_str(&last)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .map(|name| clean(&name).replace(PART, "_part-"))
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "file".to_owned());
            // A long tail after the last dot is no extension to keep.
            let (stem, ext) = match base.rfind('.') {
                Some(dot) if dot > 0 && base.len() - dot <= 16 => (&base[..dot], &base[dot..]),
                _ => (base.as_str(), ""),
            };
            // Cut before the extension, which says what the file is.
            let mut name = stem.to_owned();
            cut(&mut name, MAX_SEGMENT - ext.len());
            name.push_str(ext);
            let mut n = 1;
            while !taken.insert(name.clone()) {
                n += 1;
                let mut stem = stem.to_owned();
                cut(&mut stem, MAX_SEGMENT - ext.len() - 8);
                name = format!("{stem}-{n}{ext}");
            }
            name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_stay_under_to() {
        for (rendered, want) in [
            ("prediction/acme/neon/p1/", Ok("prediction/acme/neon/p1/")),
            ("/prediction//acme/neon/p1", Ok("prediction/acme/neon/p1/")),
            ("training/../../etc/p1/", Ok("training/_../_../etc/p1/")),
            ("./x/.", Ok("_./x/_./")),
            ("a\\b/c\u{0}d/e\u{1b}[31m", Ok("a_b/c_d/e_[31m/")),
            ("  spaced /  out ", Ok("spaced/out/")),
            ("ünïcödé/模型/", Ok("ünïcödé/模型/")),
            ("", Err(PathError::Empty)),
            ("///", Err(PathError::Empty)),
            (" / / ", Err(PathError::Empty)),
        ] {
            assert_eq!(folder(rendered), want.map(str::to_owned), "{rendered:?}");
        }
        let long = folder(&"é".repeat(400)).unwrap();
        assert!(
            long.len() <= MAX_SEGMENT + 1 && long.ends_with("é/"),
            "{long}"
        );
        let deep = vec!["x".repeat(200); 5].join("/");
        assert_eq!(folder(&deep), Err(PathError::TooLong(1005)));
    }

    fn named(urls: &[&str]) -> Vec<Named> {
        urls.iter()
            .map(|u| Named {
                url: u.to_string(),
                at: String::new(),
            })
            .collect()
    }

    #[test]
    fn each_file_gets_a_safe_name_of_its_own() {
        let names = file_names(&named(&[
            "https://replicate.delivery/a/out.png",
            "https://replicate.delivery/b/out.png",
            "https://replicate.delivery/c/out.png",
            "https://replicate.delivery/d/file%20name.txt",
            "https://replicate.delivery/e/..",
            "https://replicate.delivery/f/%2e%2e",
            "https://replicate.delivery/g/a%2Fb%5Cc",
            "https://replicate.delivery/",
            "https://replicate.delivery/h/manifest.json",
            "https://replicate.delivery/i/job.json",
            "https://replicate.delivery/j/.hidden",
            "https://replicate.delivery/k/noext",
            "https://replicate.delivery/l/noext",
            "https://replicate.delivery/m/model.part-1.bin",
        ]));
        assert_eq!(
            names,
            [
                "out.png",
                "out-2.png",
                "out-3.png",
                "file name.txt",
                // A URL's `..` (even encoded) is resolved by the URL
                // parser: nothing is left to name the file.
                "file",
                "file-2",
                "a_b_c",
                "file-3",
                "manifest-2.json",
                "job-2.json",
                ".hidden",
                "noext",
                "noext-2",
                "model_part-1.bin",
            ]
        );
        let long = format!("https://replicate.delivery/{}.png", "n".repeat(600));
        let long_tail = format!("https://replicate.delivery/x.{}", "t".repeat(600));
        let names = file_names(&named(&[&long, &long, &long_tail, &long_tail]));
        assert!(names.iter().all(|n| n.len() <= MAX_SEGMENT), "{names:?}");
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), 4, "{names:?}");
        assert!(names[1].ends_with("-2.png"), "{}", names[1]);
    }
}
