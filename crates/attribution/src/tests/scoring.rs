use super::{build, bytes, doc};
use crate::{AttributionRecord, Document, SpanParams, Vocab, attribute};

const ORIGINAL: &str = "proof of attribution pays the people whose data shaped the answer";
const OTHER: &str = "suffix arrays find every occurrence of a span in logarithmic time";
const FILLER: &str = "unrelated filler text about gardens, rivers and mountains far away";
/// An honest row of another cluster sharing one span with ORIGINAL.
const SHARES: &str = "a datanet credits those whose data shaped the answer";

fn params() -> SpanParams {
    SpanParams {
        min_len: 12,
        max_unigram_prob: 1.0,
        top_k: 64,
        max_occurrences: 10_000,
    }
}

/// A response that copies a long piece of each of ORIGINAL and OTHER.
fn response() -> Vec<u32> {
    bytes(
        "the model said: proof of attribution pays the people, and suffix arrays find every \
         occurrence; whose data shaped the answer",
    )
}

fn base(original_copies: usize, copy_contribution: impl Fn(usize) -> u64) -> Vec<Document> {
    let mut docs = vec![
        Document::from_bytes(1, 1, [1; 20], 10, ORIGINAL.as_bytes()),
        Document::from_bytes(2, 2, [2; 20], 20, OTHER.as_bytes()),
        Document::from_bytes(3, 3, [3; 20], 30, FILLER.as_bytes()),
        Document::from_bytes(4, 4, [4; 20], 40, SHARES.as_bytes()),
    ];
    for i in 0..original_copies {
        let c = copy_contribution(i);
        // Exact copies and near copies (one word changed): all in the original's cluster.
        let text = if i % 2 == 0 {
            ORIGINAL.to_string()
        } else {
            ORIGINAL.replace("answer", "result")
        };
        docs.push(Document::from_bytes(
            100 + i as u64,
            c,
            [c as u8; 20],
            10,
            text.as_bytes(),
        ));
    }
    docs
}

fn ppm_of(record: &[crate::ContributionShare], ids: impl Fn(u64) -> bool) -> u64 {
    record
        .iter()
        .filter(|c| ids(c.contribution_id))
        .map(|c| c.share_ppm as u64)
        .sum()
}

#[test]
fn copies_in_the_same_cluster_earn_nothing_extra() {
    let response = response();
    // The original alone, and then with 20 (near-)copies under its own contribution: same share or less.
    let (_a, alone) = build(Vocab::Bytes, base(0, |_| 1));
    let (_b, duplicated) = build(Vocab::Bytes, base(20, |_| 1));
    let alone = attribute(&alone, &response, &params()).unwrap();
    let duplicated = attribute(&duplicated, &response, &params()).unwrap();
    assert!(ppm_of(&alone.contributions, |c| c == 1) > 0);
    assert!(
        ppm_of(&duplicated.contributions, |c| c == 1) <= ppm_of(&alone.contributions, |c| c == 1)
    );

    // The same 20 copies under 20 other accounts (sybils): same corpus, same unigram counts,
    // so the raw scores are comparable exactly: the cluster's total is unchanged, and the
    // other contributor keeps exactly what it had.
    let (_c, sybils) = build(Vocab::Bytes, base(20, |i| 200 + i as u64));
    let sybils = attribute(&sybils, &response, &params()).unwrap();
    let raw = |a: &crate::Attribution, ids: &dyn Fn(u64) -> bool| -> f64 {
        a.raw_scores.iter().filter(|s| ids(s.0)).map(|s| s.1).sum()
    };
    let cluster = |c: u64| c == 1 || (200..220).contains(&c);
    let before = raw(&duplicated, &|c| c == 1);
    let after = raw(&sybils, &cluster);
    assert!(
        (after - before).abs() <= 1e-9 * before,
        "cluster total {after} vs original {before}"
    );
    assert_eq!(raw(&sybils, &|c| c == 2), raw(&duplicated, &|c| c == 2));
    // The span shared with another cluster is split per cluster, not per copy.
    assert!(
        raw(&sybils, &|c| c == 4) > 0.0,
        "{:#?}",
        sybils
            .spans
            .iter()
            .map(|s| (s.span.start, s.span.end, s.clusters))
            .collect::<Vec<_>>()
    );
    assert_eq!(raw(&sybils, &|c| c == 4), raw(&duplicated, &|c| c == 4));
    let sybil_ppm = ppm_of(&sybils.contributions, cluster);
    let original_ppm = ppm_of(&duplicated.contributions, |c| c == 1);
    assert!(
        sybil_ppm <= original_ppm + 21,
        "{sybil_ppm} vs {original_ppm}"
    );
    // And the sybils did take part: the original shares its cluster's part with them.
    assert!(ppm_of(&sybils.contributions, |c| c == 1) < original_ppm);
}

#[test]
fn shares_sum_to_a_million_and_repeat_exactly() {
    let (_dir, index) = build(Vocab::Bytes, base(3, |i| 50 + i as u64));
    let response = response();
    let first = AttributionRecord::create(&index, [5; 32], &response, params()).unwrap();
    assert_eq!(
        first
            .contributions
            .iter()
            .map(|c| c.share_ppm as u64)
            .sum::<u64>(),
        1_000_000
    );
    assert!(first.contributions.iter().any(|c| c.contribution_id == 2));
    for _ in 0..5 {
        let again = AttributionRecord::create(&index, [5; 32], &response, params()).unwrap();
        assert_eq!(again.encode(), first.encode());
        assert_eq!(again.hash(), first.hash());
    }
    // Filler never appears in the response, so it earns nothing.
    assert_eq!(ppm_of(&first.contributions, |c| c == 3), 0);
}

#[test]
fn top_k_truncates_and_renormalises() {
    let (_dir, index) = build(Vocab::Bytes, base(3, |i| 50 + i as u64));
    let mut p = params();
    p.top_k = 1;
    let a = attribute(&index, &response(), &p).unwrap();
    assert_eq!(a.contributions.len(), 1);
    assert_eq!(a.contributions[0].share_ppm, 1_000_000);
}

#[test]
fn spans_occurring_too_often_are_skipped() {
    let docs: Vec<Document> = (0..5)
        .map(|i| doc(i, i, i as u8, i, &bytes("shared boilerplate text")))
        .collect();
    let (_dir, index) = build(Vocab::Bytes, docs);
    let mut p = params();
    p.max_occurrences = 4;
    let a = attribute(&index, &bytes("shared boilerplate text"), &p).unwrap();
    assert_eq!(a.spans.len(), 1);
    assert!(a.spans[0].skipped);
    assert!(a.contributions.is_empty());
    p.max_occurrences = 5;
    let a = attribute(&index, &bytes("shared boilerplate text"), &p).unwrap();
    assert_eq!(a.spans[0].clusters, 5);
    assert_eq!(
        a.contributions
            .iter()
            .map(|c| c.share_ppm)
            .collect::<Vec<_>>(),
        vec![200_000; 5]
    );
}

#[test]
fn rarer_spans_weigh_more() {
    // Two spans of equal length; one made of common bytes, one of rare ones.
    let common = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let docs = vec![
        Document::from_bytes(
            1,
            1,
            [1; 20],
            1,
            format!("{common} xyzzyquuxplugh").as_bytes(),
        ),
        Document::from_bytes(2, 2, [2; 20], 2, b"QWERTYJKLZXCV"),
    ];
    let (_dir, index) = build(Vocab::Bytes, docs);
    let a = attribute(&index, &bytes("aaaaaaaaaaaaa|QWERTYJKLZXCV"), &params()).unwrap();
    let score = |id| a.raw_scores.iter().find(|s| s.0 == id).unwrap().1;
    assert!(score(2) > score(1), "{:?}", a.raw_scores);
    // The unigram filter: a threshold below the common span's probability drops it.
    let common_span = index.maximal_spans(&bytes("aaaaaaaaaaaaa"), 12, 1.0);
    let p = common_span[0].ln_prob.exp();
    assert!(
        index
            .maximal_spans(&bytes("aaaaaaaaaaaaa"), 12, p * 0.5)
            .is_empty()
    );
    assert_eq!(
        index
            .maximal_spans(&bytes("aaaaaaaaaaaaa"), 12, p * 2.0)
            .len(),
        1
    );
}

#[test]
fn records_encode_decode_and_verify() {
    let (_dir, index) = build(Vocab::Bytes, base(2, |i| 60 + i as u64));
    let response = response();
    let record = AttributionRecord::create(&index, [9; 32], &response, params()).unwrap();
    assert_eq!(record.method, "span-v1");
    assert_eq!(record.snapshot_roots, vec![[7; 32]]);
    let bytes_ = record.encode();
    assert_eq!(AttributionRecord::decode(&bytes_).unwrap(), record);
    assert!(AttributionRecord::decode(&bytes_[..bytes_.len() - 1]).is_err());
    let mut longer = bytes_.clone();
    longer.push(0);
    assert!(AttributionRecord::decode(&longer).is_err());
    assert_eq!(
        record.encode().len(),
        8 + 32 + 4 + 32 + 32 + 1 + 7 + 24 + 4 + 32 * record.contributions.len()
    );

    let json = record.to_json();
    assert!(
        json.contains("\"method\": \"span-v1\"") && json.contains("0x0909"),
        "{json}"
    );
    let from_json: AttributionRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(from_json.hash(), record.hash());

    assert!(record.verify(&index, &response).unwrap());
    let mut other_response = response.clone();
    other_response.pop();
    assert!(!record.verify(&index, &other_response).unwrap());
    let mut forged = record.clone();
    forged.contributions[0].share_ppm -= 1;
    forged.contributions.last_mut().unwrap().share_ppm += 1;
    assert!(!forged.verify(&index, &response).unwrap());
    assert_ne!(forged.hash(), record.hash());
    let mut unknown = record.clone();
    unknown.method = "span-v9".into();
    assert!(unknown.verify(&index, &response).is_err());
    let mut wrong_roots = record.clone();
    wrong_roots.snapshot_roots = vec![[8; 32]];
    assert!(!wrong_roots.verify(&index, &response).unwrap());
}

#[test]
fn u16_token_mode_attributes_like_byte_mode() {
    // The same texts as token ids in a SmolLM2-sized vocabulary (ids shifted into the u16 range).
    let shift = |s: &str| s.bytes().map(|b| b as u32 * 190 + 7).collect::<Vec<u32>>();
    let to_docs = |f: &dyn Fn(&str) -> Vec<u32>| {
        vec![
            doc(1, 1, 1, 10, &f(ORIGINAL)),
            doc(2, 2, 2, 20, &f(OTHER)),
            doc(3, 3, 3, 30, &f(FILLER)),
        ]
    };
    let (_a, bytes_index) = build(Vocab::Bytes, to_docs(&bytes));
    let (_b, token_index) = build(Vocab::Tokens { size: 49_152 }, to_docs(&shift));
    assert_eq!(token_index.manifest().token_width, 2);
    let text = "the model said: proof of attribution pays the people, and suffix arrays find every occurrence";
    let a = attribute(&bytes_index, &bytes(text), &params()).unwrap();
    let b = attribute(&token_index, &shift(text), &params()).unwrap();
    let spans = |a: &crate::Attribution| {
        a.spans
            .iter()
            .map(|s| (s.span.start, s.span.end, s.span.count()))
            .collect::<Vec<_>>()
    };
    assert_eq!(spans(&a), spans(&b));
    assert_eq!(
        a.contributions
            .iter()
            .map(|c| c.contribution_id)
            .collect::<Vec<_>>(),
        b.contributions
            .iter()
            .map(|c| c.contribution_id)
            .collect::<Vec<_>>()
    );
}
