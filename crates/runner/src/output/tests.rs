//! Outputs never replace the project's own files and are never left half written.

use super::*;

fn sample(dir: &Path) -> Project {
    let cfg = crate::sample::write_sample_project(dir, 20, None, true).unwrap();
    Project::parse(&cfg, &std::fs::read_to_string(&cfg).unwrap(), &|_| None).unwrap()
}

fn refused(project: &Project, path: &Path) -> String {
    match OutputFile::create(project, path) {
        Err(e @ OutputError::Protected { .. }) => e.to_string(),
        other => panic!("{} was not refused: {other:?}", path.display()),
    }
}

#[test]
fn output_onto_the_state_database_is_refused_and_the_database_kept() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path());
    std::fs::write(&project.state_path, b"state").unwrap();
    let msg = refused(&project, &project.state_path);
    assert!(msg.contains("the state database"), "{msg}");
    let mut wal = project.state_path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(refused(&project, Path::new(&wal)).contains("-wal"));
    assert_eq!(std::fs::read(&project.state_path).unwrap(), b"state");
}

#[test]
fn output_onto_the_model_or_the_config_is_refused_under_any_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path());
    let model = dir.path().join("data/customers.csv");
    let before = std::fs::read(&model).unwrap();
    assert!(refused(&project, &model).contains("model `customers`"));
    // Another spelling of the same path, a symlink and a hard link.
    assert!(refused(&project, &dir.path().join("data/../data/./customers.csv")).contains("model"));
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    assert!(refused(&project, &link).contains("model"));
    let hard = dir.path().join("hard.csv");
    std::fs::hard_link(&model, &hard).unwrap();
    assert!(refused(&project, &hard).contains("model"));
    assert!(refused(&project, &project.path).contains("the config file"));
    assert_eq!(std::fs::read(&model).unwrap(), before);
}

#[test]
fn an_output_folder_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path());
    let e = OutputFile::create(&project, dir.path()).unwrap_err();
    assert!(matches!(e, OutputError::IsDir { .. }), "{e}");
}

#[test]
fn an_unfinished_output_leaves_the_previous_file_and_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path());
    let path = dir.path().join("out.jsonl");
    std::fs::write(&path, b"previous\n").unwrap();
    {
        let mut out = OutputFile::create(&project, &path).unwrap();
        out.write_all(b"half a file").unwrap();
        // dropped without finish(): a failed export
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"previous\n");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");

    let mut out = OutputFile::create(&project, &path).unwrap();
    out.write_all(b"new\n").unwrap();
    out.finish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
}
