//! The `files` connector: newline-delimited JSON files appearing in a folder.
//!
//! Like Spark's file source, only complete files are taken: each epoch takes files not seen
//! before, in name order, at most `max_files_per_trigger`, once they have *settled* (not
//! modified for `settle_time`, default one second). Hidden and temporary names (`.x.json`,
//! `_x.json`, `x.json.tmp`, `x.json.crdownload`) and anything that is not a regular file are
//! skipped. The offset log records each file's size and modification time, so a replayed epoch
//! reads exactly the bytes the first attempt read, and a file that changes after it was read is
//! reported (logged and counted), never read twice. Which files were seen is rebuilt from the
//! offset log on restart, so a file is read once.
//!
//! A file that the offset log lists for an epoch not yet committed, and that is gone when the
//! epoch is replayed, stops the run with what happened; `missing_files = 'skip'` replays that
//! epoch without it (its rows are lost only for the tables that had not committed the epoch).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::options::Options;
use crate::source::raw::RawBatch;
use crate::source::{parse_range, Source};

/// The files one epoch reads (names relative to the folder), with the size and modification
/// time (nanoseconds since 1970) each had when planned. Ranges logged before sizes were
/// recorded have none; their files are read whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileRange {
    files: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sizes: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    modified_ns: Vec<u64>,
}

impl FileRange {
    /// The size and modification time logged for the `i`-th file, if any.
    fn logged(&self, i: usize) -> Option<FileVersion> {
        Some(FileVersion {
            size: *self.sizes.get(i)?,
            modified_ns: *self.modified_ns.get(i)?,
        })
    }
}

/// A file's size and modification time: what identifies the bytes that were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    size: u64,
    modified_ns: u64,
}

impl FileVersion {
    fn of(metadata: &std::fs::Metadata) -> Self {
        let modified_ns = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        FileVersion {
            size: metadata.len(),
            modified_ns,
        }
    }

    /// How long ago the file was last modified (zero for a time in the future).
    fn age(&self) -> Duration {
        let modified = UNIX_EPOCH + Duration::from_nanos(self.modified_ns);
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO)
    }
}

/// A data file in the folder, as listed.
#[derive(Debug, Clone)]
struct Listed {
    name: String,
    version: FileVersion,
}

/// A file not yet taken because it has not settled: its version when first seen so.
#[derive(Debug, Clone, Copy)]
struct Unsettled {
    version: FileVersion,
    since: Instant,
}

/// What to do when a file the offset log lists for a replayed epoch is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingFiles {
    Fail,
    Skip,
}

/// How many times `--once` waits for unsettled files before leaving them to the next run.
const ONCE_SETTLE_ROUNDS: u32 = 5;

/// Reads new `.json`/`.jsonl`/`.ndjson` files from a folder.
#[derive(Debug)]
pub struct FilesSource {
    name: String,
    dir: PathBuf,
    max_files_per_trigger: usize,
    settle_time: Duration,
    missing_files: MissingFiles,
    /// Every file read, with the version that was read (`None` for old ranges without one).
    seen: BTreeMap<String, Option<FileVersion>>,
    /// Files waiting to settle.
    unsettled: BTreeMap<String, Unsettled>,
    /// Names ending in `.json` that are not regular files (folders, FIFOs, dangling links),
    /// skipped and warned about once.
    not_files: BTreeSet<String>,
    /// Files that changed after they were read, with the version last reported.
    changed: BTreeMap<String, FileVersion>,
}

/// Whether `name` is a data file name this connector reads (not hidden, not temporary).
fn is_data_name(name: &str) -> bool {
    let data_suffix = [".json", ".jsonl", ".ndjson"]
        .iter()
        .any(|s| name.ends_with(s));
    data_suffix && !name.starts_with('.') && !name.starts_with('_')
}

impl FilesSource {
    /// Reads the connector's options: `path`, `format` (json), `max_files_per_trigger`,
    /// `settle_time` and `missing_files`.
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
        let settle_time = options
            .take_duration("settle_time")?
            .unwrap_or(Duration::from_secs(1));
        let missing_files = match options.take_choice("missing_files", &["fail", "skip"])? {
            Some(choice) if choice == "skip" => MissingFiles::Skip,
            _ => MissingFiles::Fail,
        };
        Ok(FilesSource {
            name: name.to_string(),
            dir: PathBuf::from(dir),
            max_files_per_trigger: max as usize,
            settle_time,
            missing_files,
            seen: BTreeMap::new(),
            unsettled: BTreeMap::new(),
            not_files: BTreeSet::new(),
            changed: BTreeMap::new(),
        })
    }

    fn io_error(&self, message: String, cause: std::io::Error) -> EngineError {
        EngineError::Source {
            source_name: self.name.clone(),
            message,
            cause: Some(cause),
        }
    }

    /// The folder's data files in name order; anything that is not a regular file is skipped
    /// with one warning.
    fn list(&mut self) -> Result<Vec<Listed>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            self.io_error(
                format!("cannot list folder {} (does it exist?)", self.dir.display()),
                e,
            )
        })?;
        let mut listed = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| self.io_error(format!("listing {}", self.dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !is_data_name(&name) {
                continue;
            }
            // A folder, a FIFO (whose read would block forever) or a dangling link is not data.
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => listed.push(Listed {
                    name,
                    version: FileVersion::of(&m),
                }),
                _ => {
                    if self.not_files.insert(name) {
                        tracing::warn!(
                            source = %self.name,
                            "skipping {}: not a regular file (a folder, FIFO or broken link)",
                            entry.path().display()
                        );
                    }
                }
            }
        }
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    /// Logs (once per change) every file that differs from the version that was read: its new
    /// content is not read, since a file is read once.
    fn report_changed(&mut self, listed: &[Listed]) {
        for file in listed {
            let Some(Some(read)) = self.seen.get(&file.name) else {
                continue;
            };
            if *read == file.version || self.changed.get(&file.name) == Some(&file.version) {
                continue;
            }
            tracing::warn!(
                source = %self.name,
                "{} changed after it was read ({} bytes then, {} now): the change is not read; \
                 a file is read once, so write new data to a new file",
                self.dir.join(&file.name).display(),
                read.size,
                file.version.size
            );
            self.changed.insert(file.name.clone(), file.version);
        }
    }

    /// Whether a file is complete: unmodified for `settle_time`, by its modification time or,
    /// when that is in the future, by watching it unchanged that long.
    fn is_settled(&mut self, file: &Listed, now: Instant) -> bool {
        if file.version.age() >= self.settle_time {
            self.unsettled.remove(&file.name);
            return true;
        }
        match self.unsettled.get(&file.name) {
            Some(u) if u.version == file.version => {
                let settled = now.duration_since(u.since) >= self.settle_time;
                if settled {
                    self.unsettled.remove(&file.name);
                }
                settled
            }
            _ => {
                let waiting = Unsettled {
                    version: file.version,
                    since: now,
                };
                self.unsettled.insert(file.name.clone(), waiting);
                false
            }
        }
    }

    /// How long until the first waiting file could settle.
    fn next_settle_in(&self, now: Instant) -> Duration {
        self.unsettled
            .values()
            .map(|u| {
                let by_age = self.settle_time.saturating_sub(u.version.age());
                let by_watch = self.settle_time.saturating_sub(now.duration_since(u.since));
                by_age.min(by_watch)
            })
            .min()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(10))
    }

    /// New settled files, in name order, at most `max_files_per_trigger`.
    fn take_settled(&mut self) -> Result<Vec<Listed>> {
        let listed = self.list()?;
        self.report_changed(&listed);
        let now = Instant::now();
        let new: Vec<Listed> = listed
            .into_iter()
            .filter(|f| !self.seen.contains_key(&f.name))
            .collect();
        self.unsettled
            .retain(|name, _| new.iter().any(|f| &f.name == name));
        let mut ready = Vec::new();
        for file in new {
            if ready.len() == self.max_files_per_trigger {
                break;
            }
            if self.is_settled(&file, now) {
                ready.push(file);
            }
        }
        Ok(ready)
    }

    /// The error (or, with `missing_files = 'skip'`, the warning) for a logged file that is
    /// gone or shorter than what was read.
    fn missing(&self, path: &Path, what: &str, cause: std::io::Error) -> Result<()> {
        if self.missing_files == MissingFiles::Skip {
            tracing::warn!(
                source = %self.name,
                "{} {what}; skipped (missing_files = 'skip'): its rows reach only the tables \
                 that had already committed this epoch",
                path.display()
            );
            return Ok(());
        }
        Err(self.io_error(
            format!(
                "{} {what}, but the offset log lists it for the epoch being read (planned, not \
                 yet committed by every table). Put the file back as it was and run again; or \
                 replay the epoch without it: add missing_files = 'skip' to source `{}`, run \
                 once, and remove the option (the epoch's other files are read; the missing \
                 file's rows reach only the tables that had already committed the epoch)",
                path.display(),
                self.name
            ),
            cause,
        ))
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
            self.mark_seen(&r);
        }
        Ok(())
    }

    fn plan_next(&mut self, available_now: bool) -> Result<Option<Value>> {
        let mut ready = self.take_settled()?;
        // `--once` takes what exists now, so it waits (briefly) for files still settling;
        // one still changing after that is left to the next run, with a warning.
        let mut rounds = 0;
        while available_now && ready.is_empty() && !self.unsettled.is_empty() {
            if rounds == ONCE_SETTLE_ROUNDS {
                tracing::warn!(
                    source = %self.name,
                    "{} file(s) still being written after {} settle times, left for the next \
                     run: {}",
                    self.unsettled.len(),
                    ONCE_SETTLE_ROUNDS,
                    self.unsettled.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                break;
            }
            rounds += 1;
            std::thread::sleep(self.next_settle_in(Instant::now()));
            ready = self.take_settled()?;
        }
        if ready.is_empty() {
            return Ok(None);
        }
        let range = FileRange {
            files: ready.iter().map(|f| f.name.clone()).collect(),
            sizes: ready.iter().map(|f| f.version.size).collect(),
            modified_ns: ready.iter().map(|f| f.version.modified_ns).collect(),
        };
        Ok(Some(serde_json::json!(range)))
    }

    fn read(&mut self, range: &Value) -> Result<RawBatch> {
        let r: FileRange = parse_range(&self.name, range)?;
        let mut raw = RawBatch::default();
        // Size the buffer for all files up front so reading never moves what it already read.
        let total_bytes: u64 = (0..r.files.len())
            .map(|i| match r.logged(i) {
                Some(v) => v.size,
                None => std::fs::metadata(self.dir.join(&r.files[i])).map_or(0, |m| m.len()),
            })
            .sum();
        raw.data.reserve(usize::try_from(total_bytes).unwrap_or(0));
        let mut file_col: Vec<u32> = Vec::new();
        let mut lines: Vec<i64> = Vec::new();
        for (file_no, file) in r.files.iter().enumerate() {
            let base = raw.data.len();
            if !self.read_file(file, r.logged(file_no), &mut raw.data)? {
                raw.data.truncate(base);
                continue;
            }
            let found = split_lines(&raw.data, base, &mut raw.records, &mut lines);
            file_col.extend(std::iter::repeat_n(file_no as u32, found));
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
        self.mark_seen(&r);
        Ok(())
    }

    fn describe_position(&self) -> String {
        let mut text = format!("{} files read", self.seen.len());
        if !self.unsettled.is_empty() {
            text.push_str(&format!(", {} settling", self.unsettled.len()));
        }
        if !self.changed.is_empty() {
            text.push_str(&format!(
                ", {} changed after read (not read again)",
                self.changed.len()
            ));
        }
        text
    }
}

impl FilesSource {
    /// Remembers the files of `range` as read, with the versions it logged.
    fn mark_seen(&mut self, range: &FileRange) {
        for (i, file) in range.files.iter().enumerate() {
            self.seen.insert(file.clone(), range.logged(i));
        }
    }

    /// Appends the bytes of `file` that its epoch planned (all of it for ranges without a
    /// logged size) to `data`. Returns false when the file is gone or shorter than planned and
    /// `missing_files = 'skip'` says to go on without it.
    fn read_file(
        &self,
        file: &str,
        logged: Option<FileVersion>,
        data: &mut Vec<u8>,
    ) -> Result<bool> {
        let path = self.dir.join(file);
        let mut handle = match std::fs::File::open(&path) {
            Ok(handle) => handle,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.missing(&path, "is gone", e)?;
                return Ok(false);
            }
            Err(e) => return Err(self.io_error(format!("cannot read {}", path.display()), e)),
        };
        let read_error = |e| self.io_error(format!("cannot read {}", path.display()), e);
        // Read straight into the epoch's buffer: no second copy of the file.
        let Some(version) = logged else {
            handle.read_to_end(data).map_err(read_error)?;
            return Ok(true);
        };
        let base = data.len();
        handle
            .take(version.size)
            .read_to_end(data)
            .map_err(read_error)?;
        let got = (data.len() - base) as u64;
        if got < version.size {
            let what = format!(
                "is shorter than when its epoch was planned ({} bytes then, {got} now)",
                version.size
            );
            let cause = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.clone());
            self.missing(&path, &what, cause)?;
            return Ok(false);
        }
        Ok(true)
    }
}

/// Splits `data[base..]` (one file's bytes) into records, one per non-blank line, pushing
/// each record's range and 1-based line number. Returns how many records it found.
fn split_lines(
    data: &[u8],
    base: usize,
    records: &mut Vec<Range<usize>>,
    lines: &mut Vec<i64>,
) -> usize {
    let before = records.len();
    let mut start = base;
    let mut line_no = 0i64;
    let newlines = memchr::memchr_iter(b'\n', &data[base..]).map(|i| base + i);
    for end in newlines.chain(std::iter::once(data.len())) {
        line_no += 1;
        let line = &data[start..end];
        let trimmed_end = if line.ends_with(b"\r") { end - 1 } else { end };
        // A record starts with `{`; only other lines need the blank-line scan.
        let blank = line.first() != Some(&b'{') && line.iter().all(|b| b.is_ascii_whitespace());
        if !blank {
            records.push(start..trimmed_end);
            lines.push(line_no);
        }
        start = end + 1;
    }
    records.len() - before
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
            ("settle_time".to_string(), "0s".to_string()),
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

        let mut restarted = source(dir.path(), &[]);
        restarted.restore(&[first, second]).unwrap();
        assert!(restarted.plan_next(false).unwrap().is_none());
    }

    fn source(dir: &Path, options: &[(&str, &str)]) -> FilesSource {
        let mut all = vec![("path".to_string(), dir.display().to_string())];
        all.extend(options.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        FilesSource::from_options("s", &mut Options::new(all)).unwrap()
    }

    /// A file modified less than `settle_time` ago waits; once it has not changed for that
    /// long it is taken, with its size and modification time in the range.
    #[test]
    fn a_file_is_taken_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "{\"x\":1}\n").unwrap();
        let mut src = source(dir.path(), &[("settle_time", "300 ms")]);
        assert!(src.plan_next(false).unwrap().is_none());
        assert_eq!(src.describe_position(), "0 files read, 1 settling");
        std::thread::sleep(Duration::from_millis(350));
        let range = src.plan_next(false).unwrap().unwrap();
        assert_eq!(range["files"], serde_json::json!(["a.json"]));
        assert_eq!(range["sizes"], serde_json::json!([8]));
        // `--once` waits for a settling file instead of leaving it behind.
        std::fs::write(dir.path().join("b.json"), "{\"x\":2}\n").unwrap();
        src.advance(&range).unwrap();
        let started = Instant::now();
        let range = src.plan_next(true).unwrap().unwrap();
        assert_eq!(range["files"], serde_json::json!(["b.json"]));
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    /// A replay reads the bytes the range logged, even if the file grew since; the growth is
    /// reported, not read.
    #[test]
    fn a_replay_reads_the_logged_bytes_and_a_changed_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        std::fs::write(&file, "{\"x\":1}\n").unwrap();
        let mut src = source(dir.path(), &[("settle_time", "0s")]);
        let range = src.plan_next(false).unwrap().unwrap();
        std::fs::write(&file, "{\"x\":1}\n{\"x\":2}\n").unwrap();
        let raw = src.read(&range).unwrap();
        assert_eq!(raw.len(), 1);
        src.advance(&range).unwrap();
        assert!(src.plan_next(false).unwrap().is_none());
        assert_eq!(
            src.describe_position(),
            "1 files read, 1 changed after read (not read again)"
        );
    }

    /// A file the range lists that is gone stops the read with what to do, unless
    /// `missing_files = 'skip'`, which reads the range's other files.
    #[test]
    fn a_missing_logged_file_fails_or_is_skipped_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "{\"x\":1}\n").unwrap();
        std::fs::write(dir.path().join("b.json"), "{\"x\":2}\n").unwrap();
        let mut src = source(dir.path(), &[("settle_time", "0s")]);
        let range = src.plan_next(false).unwrap().unwrap();
        std::fs::remove_file(dir.path().join("a.json")).unwrap();
        let err = src.read(&range).unwrap_err().to_string();
        assert!(err.contains("a.json is gone"), "{err}");
        assert!(err.contains("missing_files = 'skip'"), "{err}");
        let mut skipping = source(dir.path(), &[("missing_files", "skip")]);
        let raw = skipping.read(&range).unwrap();
        assert_eq!(raw.len(), 1);
        assert_eq!(raw.position(0), "_file=b.json _line=1");
    }

    /// Ranges logged before sizes were recorded still read (whole files).
    #[test]
    fn an_old_range_without_sizes_reads_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "{\"x\":1}\n{\"x\":2}").unwrap();
        let mut src = source(dir.path(), &[]);
        let raw = src.read(&serde_json::json!({"files": ["a.json"]})).unwrap();
        assert_eq!(raw.len(), 2);
    }
}
