//! The data service against an in-memory ledger: upload → seal → (chain accepts) → snapshot →
//! proof → export, idempotent re-uploads, crash leftovers, permissioned reads over HTTP.
//!
//! The ledger here is the seam the node fills with the real chain; the end-to-end path through
//! the `Datanets` precompile is tested with the CLI and `cast` in `tests/js/datanet-service.test.js`.

mod common;

use std::sync::Arc;

use common::MemoryLedger;

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use openledger_datanet::merkle::row_hash;
use openledger_datanet::pipeline::{PiiPolicy, Policy};
use openledger_datanet::row::Schema;
use openledger_dataservice::auth;
use openledger_dataservice::service::{Description, ServiceError};
use openledger_dataservice::{DataService, ServiceConfig};
use openledger_primitives::{Address, B256};

const DOCS: [&str; 4] = [
    "The harbour master logged forty arrivals in March, most of them grain barges from the upper river, and asked for two more pilots before the summer season.",
    "A new reading room opened on the second floor of the library, with quiet desks, long opening hours and a small collection of regional newspapers going back to 1890.",
    "The orchard cooperative replaced its old cider press and reports that the new one handles twice the apples per hour while wasting noticeably less juice.",
    "Volunteers repainted the footbridge over the canal during the long weekend, finishing a day early thanks to dry weather and a generous loan of scaffolding.",
];

fn jsonl(texts: &[&str]) -> String {
    texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    ledger: Arc<MemoryLedger>,
    service: DataService,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let ledger = Arc::new(MemoryLedger::default());
    let service = DataService::open(&ServiceConfig::local(&data_dir), ledger.clone()).unwrap();
    Fixture {
        _dir: dir,
        data_dir,
        ledger,
        service,
    }
}

fn upload(
    f: &Fixture,
    datanet: u64,
    name: &str,
    body: &str,
) -> Result<openledger_dataservice::service::ContributionRecord, ServiceError> {
    let upload = f.service.begin_upload(datanet)?;
    let path = f.service.staging_file(&upload, name)?;
    std::fs::write(&path, body).unwrap();
    f.service.ingest_file(&upload, &path, name)?;
    f.service.seal(&upload)
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_snapshot_prove_and_export() {
    let f = fixture();
    let description = f
        .service
        .put_description(&Description {
            description: "Town news".into(),
            policy: Policy {
                pii: PiiPolicy::Reject,
                ..Policy::default()
            },
        })
        .unwrap();
    f.ledger.add_datanet(1, Schema::Text, false, description);
    let alice = Address::repeat_byte(0xa1);
    let bob = Address::repeat_byte(0xb0);

    // Alice's upload: two good rows, one duplicate, one with an e-mail (rejected by policy),
    // one unreadable line.
    let body = format!(
        "{}{}{}{{\"text\": \"{} Write to clerk@town.example for copies.\"}}\nnot json\n",
        jsonl(&DOCS[..2]),
        jsonl(&DOCS[..1]),
        "",
        DOCS[2]
    );
    let a = upload(&f, 1, "alice.jsonl", &body).unwrap();
    assert_eq!(a.row_count, 2);
    assert_eq!(a.report.records, 5);
    assert_eq!(a.report.rejected.get("exact_duplicate"), Some(&1));
    assert_eq!(a.report.rejected.get("pii"), Some(&1));
    assert_eq!(a.report.rejected.get("unreadable"), Some(&1));
    assert!(
        a.report
            .rejections
            .iter()
            .any(|r| r.location == "alice.jsonl:5")
    );

    // The same rows again: same content root, same record (idempotent).
    let again = upload(&f, 1, "alice-again.jsonl", &jsonl(&DOCS[..2])).unwrap();
    assert_eq!(again.content_root, a.content_root);
    assert_eq!(again.segment, a.segment);

    let ca = f
        .ledger
        .contribute(1, alice, a.content_root, a.row_count, 1);

    // Bob's rows are checked against Alice's accepted ones: one near-duplicate, one new.
    let near = DOCS[0].replace("forty", "forty-one");
    let b = upload(&f, 1, "bob.jsonl", &jsonl(&[&near, DOCS[3]])).unwrap();
    assert_eq!(b.row_count, 1);
    let rejection = &b.report.rejections[0];
    assert_eq!(
        rejection.rejection.duplicate_of,
        Some(row_hash(&format!(
            "{{\"text\":{}}}",
            serde_json::to_string(DOCS[0]).unwrap()
        )))
    );
    assert!(rejection.rejection.message.contains("near-duplicate"));
    f.ledger.contribute(1, bob, b.content_root, b.row_count, 1);
    // A rejected contribution's rows never reach a snapshot.
    let c = upload(&f, 1, "carol.txt", DOCS[2]).unwrap();
    f.ledger
        .contribute(1, Address::repeat_byte(0xc0), c.content_root, 1, 2);

    let draft = f.service.build_snapshot(1).unwrap();
    assert_eq!(draft.row_count, 3);
    assert_eq!(draft.parent_snapshot_id, 0);
    let snapshot = f.ledger.publish(1, draft.root, draft.row_count, 0);

    let rows = f.service.snapshot_rows(snapshot, 0, 10).unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let proof = f.service.prove(snapshot, row.hash).unwrap();
        assert!(proof.verify(draft.root));
        assert_eq!(row.hash, row_hash(&row.row.canonical()));
    }
    let credited_to_alice = rows.iter().filter(|r| r.contributor == alice).count();
    assert_eq!(credited_to_alice, 2);
    assert_eq!(
        rows.iter()
            .find(|r| r.contributor == bob)
            .unwrap()
            .contribution_id,
        2
    );
    let _ = ca;
    assert!(matches!(
        f.service.prove(snapshot, B256::repeat_byte(1)),
        Err(ServiceError::RowNotInSnapshot { .. })
    ));

    let dir = f.service.export(snapshot).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(dir.join("rows.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert!(
            f.service
                .prove(snapshot, row_hash(line))
                .unwrap()
                .verify(draft.root)
        );
    }
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["rows"], 3);
    assert_eq!(card["license"], "CC-BY-4.0");
    assert_eq!(card["contributors"][alice.to_checksum(None)], 2);
    assert_eq!(card["contributors"][bob.to_checksum(None)], 1);
    assert_eq!(card["contributions_rejected"], 1);
    assert_eq!(card["verdicts"]["rejected: pii"], 1);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("CC-BY-4.0") && readme.contains(&draft.root.to_string()));

    // The Parquet export has the rows and their credit.
    let file = std::fs::File::open(dir.join("rows.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut texts = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .unwrap()
                .clone()
        };
        let (text, hash, contributor) = (column("text"), column("row_hash"), column("contributor"));
        for i in 0..batch.num_rows() {
            let line = serde_json::json!({ "text": text.value(i) }).to_string();
            assert_eq!(hash.value(i), row_hash(&line).to_string());
            assert!(
                [alice, bob]
                    .iter()
                    .any(|a| a.to_checksum(None) == contributor.value(i))
            );
            texts.push(text.value(i).to_owned());
        }
    }
    assert_eq!(texts.len(), 3);
    assert!(texts.contains(&DOCS[3].to_string()));

    // The second snapshot names the first as parent.
    let d = upload(&f, 1, "dave.md", "# Notes\n\nThe market square will host a night market every Friday in August, with food stalls and live music.").unwrap();
    f.ledger
        .contribute(1, Address::repeat_byte(0xd0), d.content_root, 1, 1);
    let second = f.service.build_snapshot(1).unwrap();
    assert_eq!(second.parent_snapshot_id, snapshot);
    assert_eq!(second.row_count, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_and_missing_datanets_store_nothing() {
    let f = fixture();
    f.ledger
        .add_datanet(1, Schema::InstructionResponse, false, B256::ZERO);
    assert!(matches!(
        f.service.begin_upload(9),
        Err(ServiceError::UnknownDatanet(9))
    ));
    f.ledger
        .datanets
        .lock()
        .unwrap()
        .get_mut(&1)
        .unwrap()
        .closed = true;
    assert!(matches!(
        f.service.begin_upload(1),
        Err(ServiceError::DatanetClosed(1))
    ));
    f.ledger
        .datanets
        .lock()
        .unwrap()
        .get_mut(&1)
        .unwrap()
        .closed = false;

    // Nothing acceptable: an error with the report, and no contribution recorded.
    let err = upload(
        &f,
        1,
        "bad.csv",
        "instruction,response\nonly-one-field\n\"q\",\n",
    )
    .unwrap_err();
    let ServiceError::NothingAccepted(report) = err else {
        panic!("expected NothingAccepted, got {err:?}");
    };
    assert_eq!(report.records, 2);
    assert!(
        report.rejections[0]
            .rejection
            .message
            .contains("has 1 fields but the header has 2")
    );
    assert!(
        report.rejections[1]
            .rejection
            .message
            .contains("field \"response\" is empty")
    );

    // A truncated Parquet file fails the file, clearly.
    let upload_id = f.service.begin_upload(1).unwrap();
    let path = f.service.staging_file(&upload_id, "cut.parquet").unwrap();
    std::fs::write(&path, b"PAR1\x00\x00garbage").unwrap();
    let err = f
        .service
        .ingest_file(&upload_id, &path, "cut.parquet")
        .unwrap_err();
    assert!(
        err.to_string().contains("not a readable Parquet file"),
        "{err}"
    );
    let err = f
        .service
        .ingest_file(&upload_id, &path, "data.exe")
        .unwrap_err();
    assert!(err.to_string().contains("unknown file type"), "{err}");
    f.service.abort(&upload_id);
    assert!(matches!(
        f.service.seal(&upload_id),
        Err(ServiceError::UnknownUpload(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsealed_upload_vanishes_on_restart_and_sealed_ones_survive() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let ledger = Arc::new(MemoryLedger::default());
    ledger.add_datanet(1, Schema::Text, false, B256::ZERO);
    let sealed_root;
    {
        let service = DataService::open(&ServiceConfig::local(&data_dir), ledger.clone()).unwrap();
        let f = Fixture {
            _dir: tempfile::tempdir().unwrap(),
            data_dir: data_dir.clone(),
            ledger: ledger.clone(),
            service,
        };
        sealed_root = upload(&f, 1, "a.jsonl", &jsonl(&DOCS[..2]))
            .unwrap()
            .content_root;
        // Left unsealed, as if the process died mid-upload.
        let open = f.service.begin_upload(1).unwrap();
        let path = f.service.staging_file(&open, "b.jsonl").unwrap();
        std::fs::write(&path, jsonl(&DOCS[2..])).unwrap();
        f.service.ingest_file(&open, &path, "b.jsonl").unwrap();
        assert!(
            std::fs::read_dir(f.data_dir.join("staging"))
                .unwrap()
                .count()
                > 0
        );
        // Dropped without sealing: what a killed process leaves on disk (redb itself is
        // crash-safe; the JS crash test kills a real node mid-upload).
        drop(f);
    }
    let service = DataService::open(&ServiceConfig::local(&data_dir), ledger.clone()).unwrap();
    assert_eq!(
        std::fs::read_dir(data_dir.join("staging")).unwrap().count(),
        0
    );
    assert!(
        service
            .contribution_record(1, &sealed_root)
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn permissioned_reads_need_a_signed_request_from_a_grantee() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    let f = fixture();
    f.ledger.add_datanet(1, Schema::Text, true, B256::ZERO);
    let rec = upload(&f, 1, "a.jsonl", &jsonl(&DOCS)).unwrap();
    f.ledger.contribute(
        1,
        Address::repeat_byte(0xa1),
        rec.content_root,
        rec.row_count,
        1,
    );
    let draft = f.service.build_snapshot(1).unwrap();
    let snapshot = f.ledger.publish(1, draft.root, draft.row_count, 0);
    let row = f.service.snapshot_rows(snapshot, 0, 1).unwrap()[0].hash;

    let grantee = PrivateKeySigner::random();
    let stranger = PrivateKeySigner::random();
    f.ledger
        .readers
        .lock()
        .unwrap()
        .push((1, grantee.address()));
    let router = openledger_dataservice::api::router(f.service.clone());
    let paths = [
        format!("/v1/snapshots/{snapshot}"),
        format!("/v1/snapshots/{snapshot}/rows?offset=0&limit=2"),
        format!("/v1/snapshots/{snapshot}/rows/{row}"),
        format!("/v1/snapshots/{snapshot}/proof/{row}"),
        format!("/v1/snapshots/{snapshot}/export/rows.jsonl"),
        format!("/v1/snapshots/{snapshot}/export/rows.parquet"),
        format!("/v1/snapshots/{snapshot}/export/card.json"),
        format!("/v1/snapshots/{snapshot}/export/README.md"),
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let request = |path: &str, signer: Option<(&PrivateKeySigner, &str)>| {
        let mut builder = Request::get(path);
        if let Some((signer, signed_path)) = signer {
            let message = auth::request_message("GET", signed_path, signer.address(), now + 60);
            let sig = signer.sign_message_sync(message.as_bytes()).unwrap();
            builder = builder
                .header(auth::ADDRESS_HEADER, signer.address().to_string())
                .header(auth::EXPIRES_HEADER, (now + 60).to_string())
                .header(
                    auth::SIGNATURE_HEADER,
                    format!("0x{}", hex::encode(sig.as_bytes())),
                );
        }
        builder.body(Body::empty()).unwrap()
    };
    for path in &paths {
        let anonymous = router.clone().oneshot(request(path, None)).await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
        let other = router
            .clone()
            .oneshot(request(path, Some((&stranger, path))))
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::FORBIDDEN, "{path}");
        let replayed = router
            .clone()
            .oneshot(request(path, Some((&grantee, "/v1/snapshots/1/other"))))
            .await
            .unwrap();
        assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED, "{path}");
        let granted = router
            .clone()
            .oneshot(request(path, Some((&grantee, path))))
            .await
            .unwrap();
        assert_eq!(granted.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_gigabyte_line_is_rejected_and_the_rows_after_it_kept() {
    let f = fixture();
    f.ledger.add_datanet(1, Schema::Text, false, B256::ZERO);
    let upload_id = f.service.begin_upload(1).unwrap();
    let path = f.service.staging_file(&upload_id, "huge.jsonl").unwrap();
    {
        // 1 GiB without a newline (a sparse file: no disk needed), then one good row.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 30).unwrap();
        drop(file);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, format!("\n{}", jsonl(&DOCS[..1])).as_bytes())
            .unwrap();
    }
    let report = f
        .service
        .ingest_file(&upload_id, &path, "huge.jsonl")
        .unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(report.accepted, 1);
    let message = &report.rejections[0].rejection.message;
    assert!(message.contains("line is 1073741824 bytes"), "{message}");
    assert_eq!(report.rejections[0].location, "huge.jsonl:1");
    assert_eq!(f.service.seal(&upload_id).unwrap().row_count, 1);
}
