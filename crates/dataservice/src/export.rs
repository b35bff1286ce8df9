//! Snapshot exports: the rows as JSONL and Parquet, and a dataset card.
//!
//! `rows.jsonl` holds each row's canonical line and nothing else, so `BLAKE3(line)` is the row
//! hash a snapshot proof speaks of. `rows.parquet` has one string column per schema field plus
//! the credit columns (`row_hash`, `contribution_id`, `contributor`) that attribution needs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use openledger_datanet::row::{Row, Schema};
use openledger_primitives::{Address, B256};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::ledger::{DatanetInfo, SnapshotInfo};
use crate::service::{Description, ServiceError, SnapshotRecord};

const BATCH_ROWS: usize = 8192;

fn io(path: &Path, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Io(format!("{}: {e}", path.display()))
}

/// The columns of a schema's rows, in canonical field order.
fn row_columns(schema: Schema) -> &'static [&'static str] {
    match schema {
        Schema::Text => &["text"],
        Schema::InstructionResponse => &["instruction", "input", "response"],
        Schema::Chat => &["messages"],
    }
}

fn row_cells(row: &Row) -> Vec<String> {
    match row {
        Row::Text { text } => vec![text.clone()],
        Row::InstructionResponse {
            instruction,
            input,
            response,
        } => vec![instruction.clone(), input.clone(), response.clone()],
        Row::Chat { messages } => {
            vec![serde_json::to_string(messages).expect("messages serialise")]
        }
    }
}

/// Streams rows into `rows.jsonl` and `rows.parquet` under a directory.
pub struct ExportWriter {
    dir: std::path::PathBuf,
    jsonl: BufWriter<File>,
    parquet: ArrowWriter<File>,
    schema: Arc<ArrowSchema>,
    row_schema: Schema,
    pending: Vec<(B256, u64, Address, Vec<String>)>,
}

impl ExportWriter {
    pub fn create(dir: &Path, row_schema: Schema) -> Result<Self, ServiceError> {
        let jsonl_path = dir.join("rows.jsonl");
        let jsonl = BufWriter::new(File::create(&jsonl_path).map_err(|e| io(&jsonl_path, e))?);
        let mut fields: Vec<Field> = row_columns(row_schema)
            .iter()
            .map(|name| Field::new(*name, DataType::Utf8, false))
            .collect();
        fields.push(Field::new("row_hash", DataType::Utf8, false));
        fields.push(Field::new("contribution_id", DataType::UInt64, false));
        fields.push(Field::new("contributor", DataType::Utf8, false));
        let schema = Arc::new(ArrowSchema::new(fields));
        let parquet_path = dir.join("rows.parquet");
        let file = File::create(&parquet_path).map_err(|e| io(&parquet_path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let parquet = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| io(&parquet_path, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            jsonl,
            parquet,
            schema,
            row_schema,
            pending: Vec::with_capacity(BATCH_ROWS),
        })
    }

    /// Adds one row; `canonical` is its stored line.
    pub fn push(
        &mut self,
        hash: B256,
        contribution_id: u64,
        contributor: Address,
        canonical: &str,
        row: &Row,
    ) -> Result<(), ServiceError> {
        self.jsonl
            .write_all(canonical.as_bytes())
            .and_then(|()| self.jsonl.write_all(b"\n"))
            .map_err(|e| io(&self.dir, e))?;
        debug_assert_eq!(row.schema(), self.row_schema);
        self.pending
            .push((hash, contribution_id, contributor, row_cells(row)));
        if self.pending.len() >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), ServiceError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let width = row_columns(self.row_schema).len();
        let mut cells: Vec<StringBuilder> = (0..width).map(|_| StringBuilder::new()).collect();
        let mut hashes = StringBuilder::new();
        let mut ids = UInt64Builder::new();
        let mut contributors = StringBuilder::new();
        for (hash, id, contributor, row) in self.pending.drain(..) {
            for (builder, cell) in cells.iter_mut().zip(row) {
                builder.append_value(cell);
            }
            hashes.append_value(hash.to_string());
            ids.append_value(id);
            contributors.append_value(contributor.to_checksum(None));
        }
        let mut columns: Vec<ArrayRef> = cells
            .into_iter()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        columns.push(Arc::new(hashes.finish()));
        columns.push(Arc::new(ids.finish()));
        columns.push(Arc::new(contributors.finish()));
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| io(&self.dir, e))?;
        self.parquet.write(&batch).map_err(|e| io(&self.dir, e))
    }

    pub fn finish(mut self) -> Result<(), ServiceError> {
        self.flush_batch()?;
        self.parquet.close().map_err(|e| io(&self.dir, e))?;
        let file = self
            .jsonl
            .into_inner()
            .map_err(|e| io(&self.dir, e.error()))?;
        file.sync_all().map_err(|e| io(&self.dir, e))
    }
}

/// The machine-readable dataset card.
#[derive(Debug, Serialize)]
pub struct Card<'a> {
    pub datanet_id: u64,
    pub name: &'a str,
    pub description: &'a str,
    pub license: &'a str,
    pub schema: Schema,
    pub permissioned: bool,
    pub snapshot_id: u64,
    pub snapshot_root: B256,
    pub parent_snapshot_id: u64,
    pub block_number: u64,
    pub rows: u64,
    /// Contributor → rows credited in this snapshot.
    pub contributors: BTreeMap<String, u64>,
    /// Records seen by the pipeline across the included contributions, per verdict.
    pub verdicts: BTreeMap<String, u64>,
    pub contributions_accepted: u64,
    pub contributions_rejected: u64,
    pub contributions_pending: u64,
}

pub fn write_card(
    dir: &Path,
    datanet: &DatanetInfo,
    description: &Description,
    snapshot: &SnapshotInfo,
    record: &SnapshotRecord,
) -> Result<(), ServiceError> {
    let mut contributors: BTreeMap<String, u64> = BTreeMap::new();
    let mut verdicts: BTreeMap<String, u64> = BTreeMap::new();
    for c in &record.contributions {
        *contributors
            .entry(c.contributor.to_checksum(None))
            .or_default() += c.rows_credited;
        *verdicts.entry("accepted".into()).or_default() += c.report.accepted;
        for (code, n) in &c.report.rejected {
            *verdicts.entry(format!("rejected: {code}")).or_default() += n;
        }
    }
    let card = Card {
        datanet_id: datanet.id,
        name: &datanet.name,
        description: &description.description,
        license: &datanet.license,
        schema: datanet.schema,
        permissioned: datanet.permissioned,
        snapshot_id: snapshot.id,
        snapshot_root: snapshot.root,
        parent_snapshot_id: snapshot.parent_id,
        block_number: snapshot.block_number,
        rows: record.row_count,
        contributors,
        verdicts,
        contributions_accepted: record.contributions.len() as u64,
        contributions_rejected: record.rejected_contributions,
        contributions_pending: record.pending_contributions,
    };
    let json_path = dir.join("card.json");
    let json = serde_json::to_vec_pretty(&card).expect("cards serialise");

    let mut md = String::new();
    md.push_str(&format!(
        "# {} — snapshot {}\n\n",
        card.name, card.snapshot_id
    ));
    if !card.description.is_empty() {
        md.push_str(&format!("{}\n\n", card.description));
    }
    md.push_str(&format!(
        "- **Licence:** {}\n- **Schema:** {}\n- **Access:** {}\n- **Rows:** {}\n- **Snapshot root:** `{}` (datanet {}, block {}, parent snapshot {})\n\n",
        card.license,
        card.schema,
        if card.permissioned { "permissioned" } else { "public" },
        card.rows,
        card.snapshot_root,
        card.datanet_id,
        card.block_number,
        card.parent_snapshot_id,
    ));
    md.push_str("Verify any row: `openledger datanet verify-row --snapshot ");
    md.push_str(&format!("{} --row-hash <hash>`.\n\n", card.snapshot_id));
    md.push_str("## Contributors\n\n| contributor | rows |\n|---|---|\n");
    for (who, rows) in &card.contributors {
        md.push_str(&format!("| `{who}` | {rows} |\n"));
    }
    md.push_str("\n## Curation\n\n| verdict | records |\n|---|---|\n");
    for (verdict, n) in &card.verdicts {
        md.push_str(&format!("| {verdict} | {n} |\n"));
    }
    md.push_str(&format!(
        "\nContributions: {} accepted, {} rejected, {} pending on chain.\n",
        card.contributions_accepted, card.contributions_rejected, card.contributions_pending
    ));
    std::fs::write(&json_path, json).map_err(|e| io(&json_path, e))?;
    let md_path = dir.join("README.md");
    std::fs::write(&md_path, md).map_err(|e| io(&md_path, e))
}

/// A one-column (`text`) Parquet file, for tests of the reader.
#[cfg(test)]
pub(crate) fn write_parquet_for_test(path: &Path, texts: &[&str]) {
    let schema = Arc::new(ArrowSchema::new(vec![Field::new(
        "text",
        DataType::Utf8,
        true,
    )]));
    let mut b = StringBuilder::new();
    for t in texts {
        b.append_value(t);
    }
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(b.finish())]).unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}
