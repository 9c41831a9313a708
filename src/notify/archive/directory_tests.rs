use super::*;

fn chunks(parts: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
}

fn names(dir: &Path) -> Vec<String> {
    let mut all: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn a_file_is_streamed_hashed_and_renamed_into_place() {
    let root = tempfile::tempdir().unwrap();
    let archive = Directory::new(root.path());
    let written = archive
        .write(
            "prediction/acme/p1/out.png",
            chunks(vec![b"hello ", b"world"]),
            100,
        )
        .await
        .unwrap();
    assert_eq!(written.bytes, 11);
    assert_eq!(
        written.sha256,
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    let folder = root.path().join("prediction/acme/p1");
    assert_eq!(
        std::fs::read(folder.join("out.png")).unwrap(),
        b"hello world"
    );
    // Written again: replaced whole, no temporary file left.
    archive
        .write("prediction/acme/p1/out.png", chunks(vec![b"new"]), 100)
        .await
        .unwrap();
    assert_eq!(std::fs::read(folder.join("out.png")).unwrap(), b"new");
    assert_eq!(names(&folder), ["out.png"]);
}

#[tokio::test]
async fn over_the_limit_or_broken_off_nothing_is_kept() {
    let root = tempfile::tempdir().unwrap();
    let archive = Directory::new(root.path());
    let e = archive
        .write("p/big.bin", chunks(vec![b"12345", b"67890", b"x"]), 10)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("over the limit of 10 bytes"), "{e}");
    assert!(names(&root.path().join("p")).is_empty());

    let broken = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"part")),
        Err(std::io::Error::other("connection reset")),
    ]);
    let e = archive.write("p/cut.bin", broken, 100).await.unwrap_err();
    assert!(e.to_string().contains("connection reset"), "{e}");
    assert!(names(&root.path().join("p")).is_empty());
}

#[tokio::test]
async fn nothing_is_written_outside_the_root() {
    let root = tempfile::tempdir().unwrap();
    let archive = Directory::new(root.path().join("archive"));
    for key in ["../escape", "/etc/passwd", "a/../../b", "", "./a"] {
        let e = archive
            .write(key, chunks(vec![b"x"]), 10)
            .await
            .unwrap_err();
        assert!(matches!(e, WriteError::Outside { .. }), "{key}: {e}");
    }
    assert!(!root.path().join("escape").exists());
}

#[tokio::test]
async fn a_crashs_temporary_files_are_swept() {
    let root = tempfile::tempdir().unwrap();
    let archive = Directory::new(root.path());
    let folder = root.path().join("t/p2");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("weights.tar.part-00000000000000aa"), b"half").unwrap();
    std::fs::write(folder.join("job.json"), b"{}").unwrap();
    assert_eq!(archive.sweep("t/p2/").await.unwrap(), 1);
    assert_eq!(names(&folder), ["job.json"]);
    assert_eq!(archive.sweep("t/none/").await.unwrap(), 0);
}
