//! The `files` connector: newline-delimited JSON files appearing in a folder.
//!
//! Each epoch takes files not seen before, in name order, at most `max_files_per_trigger`.
//! Which files were seen is rebuilt from the offset log on restart, so a file is read once.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::options::Options;
use crate::raw::RawBatch;
use crate::source::{parse_range, Source};

/// The files one epoch reads (names relative to the folder).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileRange {
    files: Vec<String>,
}

/// Reads new `.json`/`.jsonl`/`.ndjson` files from a folder.
#[derive(Debug)]
pub struct FilesSource {
    name: String,
    dir: PathBuf,
    max_files_per_trigger: usize,
    seen: BTreeSet<String>,
    /// Names ending in `.json` that are not regular files (folders, FIFOs, dangling links),
    /// skipped and warned about once.
    not_files: std::sync::Mutex<BTreeSet<String>>,
}

impl FilesSource {
    /// Reads the connector's options: `path`, `format` (json), `max_files_per_trigger`.
    pub fn from_options(name: &str, options: &mut Options) -> Result<Self> {
        let dir = options.require_str("path", "the folder to read, e.g. path = 'data/events'")?;
        options.take_choice("format", &["json"])?;
        let max = options.take_u64("max_files_per_trigger")?.unwrap_or(1000);
        if max == 0 {
            return Err(EngineError::option(
                "max_files_per_trigger",
                "must be at least 1",
            ));
        }
        Ok(FilesSource {
            name: name.to_string(),
            dir: PathBuf::from(dir),
            max_files_per_trigger: max as usize,
            seen: BTreeSet::new(),
            not_files: std::sync::Mutex::new(BTreeSet::new()),
        })
    }

    fn io_error(&self, message: String, cause: std::io::Error) -> EngineError {
        EngineError::Source {
            source_name: self.name.clone(),
            message,
            cause: Some(cause),
        }
    }

    fn list(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            self.io_error(
                format!("cannot list folder {} (does it exist?)", self.dir.display()),
                e,
            )
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| self.io_error(format!("listing {}", self.dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let is_data = [".json", ".jsonl", ".ndjson"]
                .iter()
                .any(|s| name.ends_with(s));
            if is_data && !name.starts_with('.') && !name.starts_with('_') {
                // A folder, a FIFO (whose read would block forever) or a dangling link is not
                // data: skipped, with one warning.
                let regular = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
                if regular {
                    names.push(name);
                } else if let Ok(mut warned) = self.not_files.lock() {
                    if warned.insert(name.clone()) {
                        tracing::warn!(
                            source = %self.name,
                            "skipping {}: not a regular file (a folder, FIFO or broken link)",
                            entry.path().display()
                        );
                    }
                }
            }
        }
        names.sort();
        Ok(names)
    }
}

impl Source for FilesSource {
    fn metadata_fields(&self) -> Vec<FieldRef> {
        vec![
            Arc::new(Field::new("_file", DataType::Utf8, false)),
            Arc::new(Field::new("_line", DataType::Int64, false)),
        ]
    }

    fn restore(&mut self, history: &[Value]) -> Result<()> {
        for entry in history {
            let r: FileRange = parse_range(&self.name, entry)?;
            self.seen.extend(r.files);
        }
        Ok(())
    }

    fn plan_next(&mut self, _available_now: bool) -> Result<Option<Value>> {
        let files: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|f| !self.seen.contains(f))
            .take(self.max_files_per_trigger)
            .collect();
        if files.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::json!(FileRange { files })))
    }

    fn read(&mut self, range: &Value) -> Result<RawBatch> {
        let r: FileRange = parse_range(&self.name, range)?;
        let mut raw = RawBatch::default();
        // Size the buffer for all files up front so reading never moves what it already read.
        let total_bytes: u64 = r
            .files
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum();
        raw.data.reserve(usize::try_from(total_bytes).unwrap_or(0));
        let mut file_col: Vec<u32> = Vec::new();
        let mut lines: Vec<i64> = Vec::new();
        for (file_no, file) in r.files.iter().enumerate() {
            let path = self.dir.join(file);
            // Read straight into the epoch's buffer: no second copy of the file.
            let base = raw.data.len();
            std::fs::File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut raw.data))
                .map_err(|e| {
                    self.io_error(
                        format!(
                            "cannot read {} which the offset log says this epoch must read; \
                             restore the file or reset the checkpoint",
                            path.display()
                        ),
                        e,
                    )
                })?;
            let end_of_file = raw.data.len();
            let mut start = base;
            let mut line_no = 0i64;
            let newlines = memchr::memchr_iter(b'\n', &raw.data[base..]).map(|i| base + i);
            for end in newlines.chain(std::iter::once(end_of_file)) {
                line_no += 1;
                let line = &raw.data[start..end];
                let trimmed_end = if line.ends_with(b"\r") { end - 1 } else { end };
                // A record starts with `{`; only other lines need the blank-line scan.
                let blank =
                    line.first() != Some(&b'{') && line.iter().all(|b| b.is_ascii_whitespace());
                if !blank {
                    raw.records.push(start..trimmed_end);
                    file_col.push(file_no as u32);
                    lines.push(line_no);
                }
                start = end + 1;
            }
        }
        let files =
            StringArray::from_iter_values(file_col.iter().map(|i| r.files[*i as usize].as_str()));
        let fields = self.metadata_fields();
        raw.metadata.push((fields[0].clone(), Arc::new(files)));
        raw.metadata
            .push((fields[1].clone(), Arc::new(Int64Array::from(lines))));
        Ok(raw)
    }

    fn advance(&mut self, range: &Value) -> Result<()> {
        let r: FileRange = parse_range(&self.name, range)?;
        self.seen.extend(r.files);
        Ok(())
    }

    fn describe_position(&self) -> String {
        format!("{} files read", self.seen.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_new_files_in_name_order_and_remembers_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.json"), "{\"x\":2}\n\n{\"x\":3}\n").unwrap();
        std::fs::write(dir.path().join("a.json"), "{\"x\":1}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let mut opts = Options::new([
            ("path".to_string(), dir.path().display().to_string()),
            ("max_files_per_trigger".to_string(), "1".to_string()),
        ]);
        let mut src = FilesSource::from_options("s", &mut opts).unwrap();
        let first = src.plan_next(false).unwrap().unwrap();
        assert_eq!(first["files"], serde_json::json!(["a.json"]));
        src.advance(&first).unwrap();
        let second = src.plan_next(false).unwrap().unwrap();
        let raw = src.read(&second).unwrap();
        assert_eq!(raw.len(), 2);
        assert_eq!(raw.record(1), b"{\"x\":3}");
        assert_eq!(raw.position(1), "_file=b.json _line=3");
        src.advance(&second).unwrap();
        assert!(src.plan_next(false).unwrap().is_none());

        let mut restarted = FilesSource::from_options(
            "s",
            &mut Options::new([("path".to_string(), dir.path().display().to_string())]),
        )
        .unwrap();
        restarted.restore(&[first, second]).unwrap();
        assert!(restarted.plan_next(false).unwrap().is_none());
    }
}
