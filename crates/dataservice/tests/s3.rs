//! Blobs in S3: the same upload → snapshot → export path with the blob store on a real S3
//! endpoint, `moto_server` (PyPI `moto[server]`), started here on a free port.
//!
//! `scripts/test` installs moto and sets `OPENLEDGER_MOTO_SERVER` to its `moto_server`; with
//! `OPENLEDGER_REQUIRE_S3_TESTS=1` (set by CI) a missing server fails the test instead of
//! skipping it.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::MemoryLedger;
use openledger_datanet::merkle::row_hash;
use openledger_datanet::row::Schema;
use openledger_dataservice::blobs::{BlobError, content_hash};
use openledger_dataservice::{BlobConfig, BlobStore, DataService, ServiceConfig};
use openledger_primitives::{Address, B256};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Option<Moto> {
    let Ok(server) = std::env::var("OPENLEDGER_MOTO_SERVER") else {
        assert!(
            std::env::var("OPENLEDGER_REQUIRE_S3_TESTS").is_err(),
            "OPENLEDGER_REQUIRE_S3_TESTS is set but OPENLEDGER_MOTO_SERVER is not"
        );
        eprintln!(
            "skipping: set OPENLEDGER_MOTO_SERVER to a moto_server binary (scripts/test does)"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {server}: {e}"));
    let endpoint = format!("http://127.0.0.1:{port}");
    let moto = Moto { child, endpoint };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start in 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

fn create_bucket(endpoint: &str, bucket: &str) {
    // moto accepts unsigned requests; a PUT on the bucket path creates it.
    let response = ureq::put(&format!("{endpoint}/{bucket}"))
        .send_empty()
        .expect("create bucket");
    assert!(response.status().is_success(), "{}", response.status());
}

fn s3(endpoint: &str, bucket: &str) -> BlobConfig {
    BlobConfig::S3 {
        bucket: bucket.into(),
        endpoint: endpoint.into(),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn datanet_blobs_live_in_s3() {
    let Some(moto) = start_moto() else { return };
    create_bucket(&moto.endpoint, "datanets");

    let store = BlobStore::open(&s3(&moto.endpoint, "datanets")).unwrap();
    let hash = store.put(Bytes::from_static(b"row bytes")).await.unwrap();
    assert_eq!(hash, content_hash(b"row bytes"));
    assert_eq!(&store.get(&hash).await.unwrap()[..], b"row bytes");
    assert_eq!(&store.get_range(&hash, 4, 5).await.unwrap()[..], b"bytes");
    let missing = B256::repeat_byte(7);
    assert!(matches!(
        store.get(&missing).await,
        Err(BlobError::NotFound(_))
    ));

    // A file bigger than one multipart part streams up and back intact.
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..12_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(dir.path().join("big"), &big).unwrap();
    let big_hash = content_hash(&big);
    store
        .put_file(&dir.path().join("big"), big_hash)
        .await
        .unwrap();
    store
        .download(&big_hash, &dir.path().join("back"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("back")).unwrap(), big);

    // The whole service on S3.
    let ledger = Arc::new(MemoryLedger::default());
    ledger.add_datanet(1, Schema::Text, false, B256::ZERO);
    let config = ServiceConfig {
        data_dir: dir.path().join("data"),
        blobs: s3(&moto.endpoint, "datanets"),
    };
    let service = DataService::open(&config, ledger.clone()).unwrap();
    let upload = service.begin_upload(1).unwrap();
    let path = service.staging_file(&upload, "rows.jsonl").unwrap();
    let texts = [
        "Stored in a bucket rather than on the local disk, this row still hashes to the same content address.",
        "A second row, about the tides along the northern coast and how the ferry timetable follows them closely.",
    ];
    let body: String = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
        .collect();
    std::fs::write(&path, body).unwrap();
    service.ingest_file(&upload, &path, "rows.jsonl").unwrap();
    let record = service.seal(&upload).unwrap();
    assert_eq!(record.row_count, 2);
    assert!(store.contains(&record.segment).await.unwrap());
    ledger.contribute(1, Address::repeat_byte(1), record.content_root, 2, 1);
    let draft = service.build_snapshot(1).unwrap();
    let snapshot = ledger.publish(1, draft.root, draft.row_count, 0);
    let exported = service.export(snapshot).unwrap();
    for line in std::fs::read_to_string(exported.join("rows.jsonl"))
        .unwrap()
        .lines()
    {
        assert!(
            service
                .prove(snapshot, row_hash(line))
                .unwrap()
                .verify(draft.root)
        );
    }
}
