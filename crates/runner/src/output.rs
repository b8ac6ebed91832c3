//! Files that commands write for people (`plan --output`, `runs show --export`).
//!
//! Two rules protect the project from its own outputs:
//! - an output never replaces one of the project's inputs: the config file, a model's file
//!   or folder, or the state database (with its `-wal`, `-shm` and `-journal` companions),
//!   whether named directly, through a symlink, a hard link or another spelling of the path;
//! - an output is written to a temporary file beside its destination and renamed into place
//!   only once complete, so a failed or interrupted write leaves the old file (or nothing),
//!   never half a file.

use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use crate::config::{ModelSpec, Project};

/// Why an output file cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The output would replace one of the project's own files.
    #[error(
        "refusing to write {}: it is {what} ({}); choose another output file",
        path.display(),
        protected.display()
    )]
    Protected {
        /// The output asked for.
        path: PathBuf,
        /// What it would overwrite, for people ("the state database").
        what: String,
        /// The project's file it is.
        protected: PathBuf,
    },
    /// The output is a folder.
    #[error("cannot write {}: it is a folder; give a file name", path.display())]
    IsDir {
        /// The output asked for.
        path: PathBuf,
    },
    /// Creating, writing or renaming failed.
    #[error("cannot write {}", path.display())]
    Io {
        /// The output asked for.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One of the project's own files, with what it is.
#[derive(Debug, Clone)]
struct Protected {
    path: PathBuf,
    what: String,
    /// A folder whose every file is protected (a Parquet model folder).
    folder: bool,
}

/// The files (and folders) an output must never replace.
fn protected_files(project: &Project) -> Vec<Protected> {
    let file = |path: &Path, what: String| Protected {
        path: path.to_owned(),
        what,
        folder: false,
    };
    let database = |out: &mut Vec<Protected>, path: &Path, what: &str| {
        out.push(file(path, what.to_owned()));
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            out.push(file(Path::new(&p), format!("{what}'s {suffix} file")));
        }
    };
    let mut out = vec![file(&project.path, "the config file".to_owned())];
    database(&mut out, &project.state_path, "the state database");
    for (name, model) in &project.models {
        match &model.spec {
            ModelSpec::Csv { path, .. } | ModelSpec::Jsonl { path } => {
                out.push(file(path, format!("the file of model `{name}`")));
            }
            ModelSpec::Parquet { path } => out.push(Protected {
                path: path.clone(),
                what: format!("the file or folder of model `{name}`"),
                folder: path.is_dir(),
            }),
            ModelSpec::Sqlite { path, .. } => {
                database(&mut out, path, &format!("the database of model `{name}`"));
            }
            ModelSpec::Postgres { .. } => {}
        }
    }
    out
}

/// `path` made absolute and cleaned of `.`/`..` without touching the file system beyond
/// resolving the deepest existing ancestor (so symlinked folders compare equal).
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut clean = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    // Resolve symlinks in the part that exists; keep the rest as written.
    let mut existing = clean.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_owned();
            }
            _ => return clean,
        }
    }
    let mut real = std::fs::canonicalize(&existing).unwrap_or(existing);
    real.extend(rest.iter().rev());
    real
}

/// Refuses an output path that names one of the project's own files.
pub fn check_output_path(project: &Project, path: &Path) -> Result<(), OutputError> {
    if path.is_dir() {
        return Err(OutputError::IsDir {
            path: path.to_owned(),
        });
    }
    let target = resolved(path);
    for p in protected_files(project) {
        let own = resolved(&p.path);
        let hit = target == own
            || (p.folder && target.starts_with(&own))
            || (!p.folder && same_file::is_same_file(path, &p.path).unwrap_or(false));
        if hit {
            return Err(OutputError::Protected {
                path: path.to_owned(),
                what: p.what,
                protected: p.path,
            });
        }
    }
    Ok(())
}

/// An output being written: a temporary file beside its destination until
/// [`OutputFile::finish`] renames it into place. Dropped unfinished, it is removed.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    file: BufWriter<tempfile::NamedTempFile>,
}

impl OutputFile {
    /// Starts writing `path` for `project`, refusing the project's own files.
    pub fn create(project: &Project, path: &Path) -> Result<OutputFile, OutputError> {
        check_output_path(project, path)?;
        let io = |source| OutputError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".to_owned());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(io)?;
        Ok(OutputFile {
            path: path.to_owned(),
            file: BufWriter::with_capacity(1 << 16, tmp),
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, syncs and renames the file into place.
    pub fn finish(self) -> Result<(), OutputError> {
        let io = |source| OutputError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.file.into_inner().map_err(|e| io(e.into_error()))?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests;
