//! Reading contributed files into records, streamed: JSONL, CSV, Parquet, plain text and
//! Markdown.
//!
//! A file yields [`Record`]s one at a time, so memory stays flat whatever the file size. A
//! record that cannot be read (a line that is not JSON, invalid UTF-8, a ragged CSV row, a line
//! longer than the row limit) becomes [`Content::Unreadable`] with the reason and its location,
//! and reading goes on; a file that cannot be read at all (truncated Parquet, an unknown
//! extension) is an [`IngestError`] and nothing of it is kept.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, BooleanArray, Float64Array, Int32Array, Int64Array, LargeStringArray, RecordBatch,
    StringArray, StringViewArray, UInt32Array, UInt64Array,
};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Value};

/// The file formats a contribution may come in, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
    Parquet,
    Text,
    Markdown,
}

impl Format {
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "jsonl" | "ndjson" => Format::Jsonl,
            "csv" => Format::Csv,
            "parquet" => Format::Parquet,
            "txt" | "text" => Format::Text,
            "md" | "markdown" => Format::Markdown,
            _ => return None,
        })
    }
}

/// Where a record came from, for error messages: `data.jsonl:17`, `rows.parquet row 4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    /// Line (JSONL), record (CSV, 1 = first after the header) or row (Parquet), from 1.
    pub index: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.index)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A structured record to validate against the datanet's schema.
    Json(Value),
    /// A whole plain-text or Markdown document.
    Text(String),
    /// Could not be read; the reason says why.
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub location: Location,
    pub content: Content,
    /// Bytes this record took in the input file.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "{path}: unknown file type; use .jsonl, .csv, .parquet, .txt or .md (the extension decides how the file is read)"
    )]
    UnknownFormat { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a readable Parquet file ({reason}); if it was cut short, upload it again")]
    Parquet { path: String, reason: String },
    #[error("{path}: CSV header could not be read: {reason}")]
    CsvHeader { path: String, reason: String },
}

/// The files of `path`: the file itself, or every file under a directory (recursively,
/// sorted by path, hidden files skipped) so that the same directory always ingests alike.
pub fn files_under(path: &Path) -> Result<Vec<PathBuf>, IngestError> {
    let io = |source| IngestError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let p = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type().map_err(io)?.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Opens `path` for reading as `format`; `display_name` is what locations and errors call it.
/// Records longer than `max_record_bytes` are reported unreadable without being buffered.
pub fn open(
    path: &Path,
    format: Format,
    display_name: &str,
    max_record_bytes: usize,
) -> Result<Box<dyn Iterator<Item = Record> + Send>, IngestError> {
    let io = |source| IngestError::Io {
        path: display_name.to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    Ok(match format {
        Format::Jsonl => Box::new(JsonlRecords {
            reader: BufReader::with_capacity(1 << 20, file),
            file: display_name.to_string(),
            line: 0,
            max: max_record_bytes,
            buf: Vec::new(),
            done: false,
        }),
        Format::Csv => Box::new(CsvRecords::new(file, display_name, max_record_bytes)?),
        Format::Parquet => Box::new(ParquetRecords::new(file, display_name)?),
        Format::Text | Format::Markdown => {
            let len = file.metadata().map_err(io)?.len();
            let location = Location {
                file: display_name.to_string(),
                index: 1,
            };
            let content = if len > max_record_bytes as u64 {
                Content::Unreadable(format!(
                    "the document is {len} bytes; rows may be at most {max_record_bytes} bytes — split it into smaller files"
                ))
            } else {
                let mut bytes = Vec::with_capacity(len as usize);
                (&file).read_to_end(&mut bytes).map_err(io)?;
                match String::from_utf8(bytes) {
                    Ok(text) => Content::Text(text),
                    Err(e) => Content::Unreadable(utf8_reason(e.utf8_error())),
                }
            };
            Box::new(std::iter::once(Record {
                location,
                content,
                bytes: len,
            }))
        }
    })
}

fn utf8_reason(e: std::str::Utf8Error) -> String {
    format!(
        "not valid UTF-8 (bad byte at offset {}); save the file as UTF-8",
        e.valid_up_to()
    )
}

/// JSON Lines, one record per line; blank lines are skipped.
struct JsonlRecords {
    reader: BufReader<File>,
    file: String,
    line: u64,
    max: usize,
    buf: Vec<u8>,
    done: bool,
}

impl JsonlRecords {
    /// Reads one line into `buf` (without the newline), keeping at most `max + 1` bytes of it;
    /// returns the line's full length, or `None` at end of file.
    fn read_line(&mut self) -> std::io::Result<Option<u64>> {
        self.buf.clear();
        let mut total = 0u64;
        let mut any = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(any.then_some(total));
            }
            any = true;
            let (piece, found_newline) = match memchr(b'\n', chunk) {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            let room = (self.max + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&piece[..piece.len().min(room)]);
            total += piece.len() as u64;
            let consumed = piece.len() + found_newline as usize;
            self.reader.consume(consumed);
            if found_newline {
                return Ok(Some(total));
            }
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

impl Iterator for JsonlRecords {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if self.done {
                return None;
            }
            let len = match self.read_line() {
                Ok(Some(len)) => len,
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    self.line += 1;
                    return Some(Record {
                        location: Location {
                            file: self.file.clone(),
                            index: self.line,
                        },
                        content: Content::Unreadable(format!("read failed: {e}")),
                        bytes: 0,
                    });
                }
            };
            self.line += 1;
            let location = Location {
                file: self.file.clone(),
                index: self.line,
            };
            if len > self.max as u64 {
                return Some(Record {
                    location,
                    content: Content::Unreadable(format!(
                        "line is {len} bytes; rows may be at most {} bytes",
                        self.max
                    )),
                    bytes: len + 1,
                });
            }
            let mut line: &[u8] = &self.buf;
            if line.ends_with(b"\r") {
                line = &line[..line.len() - 1];
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let content = match std::str::from_utf8(line) {
                Err(e) => Content::Unreadable(utf8_reason(e)),
                Ok(text) => match serde_json::from_str::<Value>(text) {
                    Ok(value) => Content::Json(value),
                    Err(e) => Content::Unreadable(format!("not valid JSON: {e}")),
                },
            };
            return Some(Record {
                location,
                content,
                bytes: len + 1,
            });
        }
    }
}

/// CSV with a header row naming the fields. A `messages` cell holding a JSON array is parsed,
/// so chat rows can come as CSV too.
struct CsvRecords {
    reader: csv::Reader<File>,
    headers: Vec<String>,
    file: String,
    record: u64,
    max: usize,
    row: csv::ByteRecord,
    /// Set after an I/O error: it is reported once, then the file ends.
    stopped: bool,
}

impl CsvRecords {
    fn new(file: File, name: &str, max: usize) -> Result<Self, IngestError> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
        let headers = reader
            .headers()
            .map_err(|e| IngestError::CsvHeader {
                path: name.to_string(),
                reason: e.to_string(),
            })?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        Ok(Self {
            reader,
            headers,
            file: name.to_string(),
            record: 0,
            max,
            row: csv::ByteRecord::new(),
            stopped: false,
        })
    }
}

impl Iterator for CsvRecords {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.stopped {
            return None;
        }
        let before = self.reader.position().byte();
        let read = self.reader.read_byte_record(&mut self.row);
        self.record += 1;
        let location = Location {
            file: self.file.clone(),
            index: self.record,
        };
        let bytes = self.reader.position().byte() - before;
        let content = match read {
            Ok(false) => return None,
            Err(e) => {
                self.stopped = e.is_io_error();
                Content::Unreadable(format!("not valid CSV: {e}"))
            }
            Ok(true) if self.row.len() != self.headers.len() => Content::Unreadable(format!(
                "has {} fields but the header has {} ({}); quote fields that contain commas",
                self.row.len(),
                self.headers.len(),
                self.headers.join(", ")
            )),
            Ok(true) if bytes > self.max as u64 => Content::Unreadable(format!(
                "record is {bytes} bytes; rows may be at most {} bytes",
                self.max
            )),
            Ok(true) => {
                let mut object = Map::new();
                let mut bad = None;
                for (name, cell) in self.headers.iter().zip(self.row.iter()) {
                    match std::str::from_utf8(cell) {
                        Ok(text) => {
                            object.insert(name.clone(), cell_value(name, text));
                        }
                        Err(e) => {
                            bad = Some(format!("field \"{name}\" is {}", utf8_reason(e)));
                            break;
                        }
                    }
                }
                match bad {
                    Some(reason) => Content::Unreadable(reason),
                    None => Content::Json(Value::Object(object)),
                }
            }
        };
        Some(Record {
            location,
            content,
            bytes,
        })
    }
}

/// Tabular cells are strings; a `messages` column carries the chat as a JSON array.
fn cell_value(column: &str, text: &str) -> Value {
    if column == "messages"
        && let Ok(value @ Value::Array(_)) = serde_json::from_str(text)
    {
        return value;
    }
    Value::String(text.to_string())
}

/// Parquet, read one record batch at a time. String columns become fields; null cells are
/// left out; a column of another type makes its rows unreadable with the column's name.
struct ParquetRecords {
    reader: ParquetRecordBatchReader,
    file: String,
    batch: Option<RecordBatch>,
    next_in_batch: usize,
    row: u64,
    failed: bool,
}

impl ParquetRecords {
    fn new(file: File, name: &str) -> Result<Self, IngestError> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(4096).build())
            .map_err(|e| IngestError::Parquet {
                path: name.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            reader,
            file: name.to_string(),
            batch: None,
            next_in_batch: 0,
            row: 0,
            failed: false,
        })
    }

    fn row_content(batch: &RecordBatch, i: usize) -> Content {
        let mut object = Map::new();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let name = field.name();
            if column.is_null(i) {
                continue;
            }
            let text = match column.data_type() {
                DataType::Utf8 => column
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .map(|a| a.value(i)),
                DataType::LargeUtf8 => column
                    .as_any()
                    .downcast_ref::<LargeStringArray>()
                    .map(|a| a.value(i)),
                DataType::Utf8View => column
                    .as_any()
                    .downcast_ref::<StringViewArray>()
                    .map(|a| a.value(i)),
                // Numbers and booleans are kept as such, so the schema check can name the
                // field ("must be a string, found a number") rather than the column type.
                DataType::Int64 | DataType::Int32 | DataType::UInt64 | DataType::UInt32 => {
                    let value = column
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .map(|a| Value::from(a.value(i)))
                        .or_else(|| {
                            column
                                .as_any()
                                .downcast_ref::<Int32Array>()
                                .map(|a| Value::from(a.value(i)))
                        })
                        .or_else(|| {
                            column
                                .as_any()
                                .downcast_ref::<UInt64Array>()
                                .map(|a| Value::from(a.value(i)))
                        })
                        .or_else(|| {
                            column
                                .as_any()
                                .downcast_ref::<UInt32Array>()
                                .map(|a| Value::from(a.value(i)))
                        });
                    if let Some(value) = value {
                        object.insert(name.clone(), value);
                    }
                    continue;
                }
                DataType::Float64 => {
                    if let Some(a) = column.as_any().downcast_ref::<Float64Array>() {
                        object.insert(name.clone(), Value::from(a.value(i)));
                    }
                    continue;
                }
                DataType::Boolean => {
                    if let Some(a) = column.as_any().downcast_ref::<BooleanArray>() {
                        object.insert(name.clone(), Value::from(a.value(i)));
                    }
                    continue;
                }
                other => {
                    return Content::Unreadable(format!(
                        "column \"{name}\" has type {other}; datanet fields must be string columns"
                    ));
                }
            };
            let Some(text) = text else {
                return Content::Unreadable(format!("column \"{name}\" could not be read"));
            };
            object.insert(name.clone(), cell_value(name, text));
        }
        Content::Json(Value::Object(object))
    }
}

impl Iterator for ParquetRecords {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(batch) = &self.batch
                && self.next_in_batch < batch.num_rows()
            {
                let i = self.next_in_batch;
                self.next_in_batch += 1;
                self.row += 1;
                let content = Self::row_content(batch, i);
                let bytes = match &content {
                    Content::Json(v) => v.to_string().len() as u64,
                    _ => 0,
                };
                return Some(Record {
                    location: Location {
                        file: self.file.clone(),
                        index: self.row,
                    },
                    content,
                    bytes,
                });
            }
            match self.reader.next()? {
                Ok(batch) => {
                    self.batch = Some(batch);
                    self.next_in_batch = 0;
                }
                Err(e) => {
                    // A corrupt page: report it at the next row and stop reading this file.
                    self.failed = true;
                    self.row += 1;
                    return Some(Record {
                        location: Location {
                            file: self.file.clone(),
                            index: self.row,
                        },
                        content: Content::Unreadable(format!(
                            "Parquet data is corrupt from here on ({e}); nothing after it was read"
                        )),
                        bytes: 0,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    fn read_all(path: &Path, max: usize) -> Vec<Record> {
        let format = Format::from_path(path).unwrap();
        open(
            path,
            format,
            &path.file_name().unwrap().to_string_lossy(),
            max,
        )
        .unwrap()
        .collect()
    }

    #[test]
    fn jsonl_reports_bad_lines_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = b"{\"text\":\"one\"}\n\nnot json\n".to_vec();
        bytes.extend_from_slice(b"{\"text\":\"\xff\xfe\"}\n");
        bytes.extend_from_slice(&[b'x'; 300]);
        bytes.extend_from_slice(b"\n{\"text\":\"last\"}");
        let path = write(dir.path(), "a.jsonl", &bytes);
        let records = read_all(&path, 100);
        assert_eq!(records.len(), 5, "{records:?}");
        assert_eq!(
            records[0].content,
            Content::Json(serde_json::json!({"text": "one"}))
        );
        assert_eq!(records[1].location.index, 3, "blank line 2 is skipped");
        assert!(
            matches!(&records[1].content, Content::Unreadable(r) if r.contains("not valid JSON"))
        );
        assert!(matches!(&records[2].content, Content::Unreadable(r) if r.contains("UTF-8")));
        assert!(matches!(&records[3].content, Content::Unreadable(r) if r.contains("300 bytes")));
        assert_eq!(
            records[4].content,
            Content::Json(serde_json::json!({"text": "last"}))
        );
        assert_eq!(records[4].location.to_string(), "a.jsonl:6");
    }

    #[test]
    fn huge_line_is_not_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.jsonl");
        let mut f = File::create(&path).unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..64 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\n{\"text\":\"after\"}\n").unwrap();
        drop(f);
        let records = read_all(&path, 4096);
        assert_eq!(records.len(), 2);
        assert!(
            matches!(&records[0].content, Content::Unreadable(r) if r.contains("67108864 bytes"))
        );
        assert_eq!(
            records[1].content,
            Content::Json(serde_json::json!({"text": "after"}))
        );
    }

    #[test]
    fn csv_ragged_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "r.csv",
            b"instruction,response\n\"Add 2, 2\",4\nonly one\nq,a,extra\n",
        );
        let records = read_all(&path, 1000);
        assert_eq!(records.len(), 3);
        assert_eq!(
            records[0].content,
            Content::Json(serde_json::json!({"instruction": "Add 2, 2", "response": "4"}))
        );
        assert!(
            matches!(&records[1].content, Content::Unreadable(r) if r.contains("has 1 fields but the header has 2"))
        );
        assert!(
            matches!(&records[2].content, Content::Unreadable(r) if r.contains("has 3 fields"))
        );
    }

    #[test]
    fn csv_messages_column_is_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "c.csv",
            b"messages\n\"[{\"\"role\"\":\"\"user\"\",\"\"content\"\":\"\"hi\"\"}]\"\n",
        );
        let records = read_all(&path, 1000);
        assert_eq!(
            records[0].content,
            Content::Json(serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}))
        );
    }

    #[test]
    fn text_documents_are_one_record_and_size_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(dir.path(), "n.md", b"# Title\n\nBody text.");
        assert_eq!(
            read_all(&ok, 100)[0].content,
            Content::Text("# Title\n\nBody text.".into())
        );
        let big = write(dir.path(), "big.txt", &[b'a'; 500]);
        assert!(
            matches!(&read_all(&big, 100)[0].content, Content::Unreadable(r) if r.contains("500 bytes"))
        );
    }

    #[test]
    fn truncated_parquet_is_a_file_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        crate::export::write_parquet_for_test(&path, &["alpha", "beta", "gamma"]);
        let full = read_all(&path, 1000);
        assert_eq!(full.len(), 3);
        assert_eq!(
            full[1].content,
            Content::Json(serde_json::json!({"text": "beta"}))
        );

        let bytes = std::fs::read(&path).unwrap();
        let cut = write(dir.path(), "cut.parquet", &bytes[..bytes.len() / 2]);
        let err = match open(&cut, Format::Parquet, "cut.parquet", 1000) {
            Err(e) => e,
            Ok(_) => panic!("truncated parquet opened"),
        };
        assert!(
            err.to_string().contains("not a readable Parquet file"),
            "{err}"
        );
    }

    #[test]
    fn directories_are_walked_in_order_without_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        write(dir.path(), "b.txt", b"b");
        write(&dir.path().join("sub"), "a.txt", b"a");
        write(dir.path(), ".hidden.txt", b"h");
        let files = files_under(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, vec!["b.txt", "sub/a.txt"]);
        assert!(Format::from_path(Path::new("x.exe")).is_none());
    }
}
