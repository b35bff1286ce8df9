use proptest::prelude::*;

use super::{build, bytes, doc, text_docs};
use crate::{Document, Vocab, detmath, format::pointer_width};

/// Every (doc index, offset) where `ngram` occurs, brute force.
fn brute_occurrences(docs: &[Document], ngram: &[u32]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        if ngram.len() <= doc.tokens.len() {
            for o in 0..=doc.tokens.len() - ngram.len() {
                if doc.tokens[o..o + ngram.len()] == *ngram {
                    out.push((d as u64, o as u64));
                }
            }
        }
    }
    out
}

fn brute_longest(docs: &[Document], response: &[u32]) -> Vec<usize> {
    (0..response.len())
        .map(|i| {
            let mut j = i;
            while j < response.len() && !brute_occurrences(docs, &response[i..=j]).is_empty() {
                j += 1;
            }
            j
        })
        .collect()
}

/// The vocabularies under test with an alphabet of four tokens that sit at the edges of
/// each (so byte 254, u16 65534 and large u32 ids are exercised).
fn modes() -> Vec<(Vocab, [u32; 4])> {
    vec![
        (Vocab::Bytes, [0, 1, 128, 254]),
        (Vocab::Tokens { size: 65535 }, [0, 1, 300, 65534]),
        (Vocab::Tokens { size: 100_000 }, [0, 70_000, 65_535, 99_999]),
    ]
}

fn corpus_strategy() -> impl Strategy<Value = (usize, Vec<Vec<usize>>, Vec<Vec<usize>>)> {
    (
        0usize..3,
        proptest::collection::vec(proptest::collection::vec(0usize..4, 0..24), 0..6),
        proptest::collection::vec(proptest::collection::vec(0usize..5, 0..6), 1..12),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn queries_match_brute_force((mode, docs, queries) in corpus_strategy()) {
        let (vocab, alphabet) = modes()[mode].clone();
        let sep = vocab.separator();
        // Symbol 4 stands for the separator, which queries may contain but must never match.
        let sym = |s: usize| if s < 4 { alphabet[s] } else { sep };
        let docs: Vec<Document> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| doc(i as u64, i as u64 / 2, (i / 2) as u8, i as u64 / 3, &d.iter().map(|&s| alphabet[s]).collect::<Vec<_>>()))
            .collect();
        let (_dir, index) = build(vocab, docs.clone());
        prop_assert_eq!(index.num_docs(), docs.len() as u64);
        for q in &queries {
            let q: Vec<u32> = q.iter().map(|&s| sym(s)).collect();
            let brute = brute_occurrences(&docs, &q);
            if q.is_empty() {
                prop_assert_eq!(index.count(&q), index.num_tokens());
                continue;
            }
            prop_assert_eq!(index.count(&q), brute.len() as u64, "count {:?}", q);
            let mut found: Vec<(u64, u64)> = index.occurrences(&q, usize::MAX).iter().map(|o| (o.doc.doc, o.offset)).collect();
            found.sort_unstable();
            prop_assert_eq!(&found, &brute);
            for o in index.occurrences(&q, 2) {
                prop_assert_eq!(o.doc.row_id, docs[o.doc.doc as usize].row_id);
                prop_assert_eq!(o.doc.contribution_id, docs[o.doc.doc as usize].contribution_id);
                prop_assert_eq!(o.doc.cluster_id, docs[o.doc.doc as usize].cluster_id);
            }
            prop_assert!(index.occurrences(&q, 2).len() <= 2);

            // next_tokens: what follows each brute-force occurrence.
            let mut expected = std::collections::BTreeMap::new();
            let mut end = 0;
            for &(d, o) in &brute {
                match docs[d as usize].tokens.get(o as usize + q.len()) {
                    Some(&t) => *expected.entry(t).or_insert(0u64) += 1,
                    None => end += 1,
                }
            }
            let next = index.next_tokens(&q);
            prop_assert_eq!(next.total, brute.len() as u64);
            prop_assert_eq!(next.end_of_document, end);
            prop_assert_eq!(next.tokens, expected.into_iter().collect::<Vec<_>>());
        }
        // The unigram table against the documents.
        for &t in &alphabet {
            let c = docs.iter().flat_map(|d| &d.tokens).filter(|&&x| x == t).count() as u64;
            prop_assert_eq!(index.unigram_count(t), c);
        }
    }

    #[test]
    fn longest_matches_and_maximal_spans_match_brute_force(
        (mode, docs, _) in corpus_strategy(),
        response in proptest::collection::vec(0usize..5, 0..40),
        min_len in 1usize..4,
        max_prob_exp in -12i32..1,
    ) {
        let (vocab, alphabet) = modes()[mode].clone();
        let sep = vocab.separator();
        let docs: Vec<Document> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| doc(i as u64, i as u64, i as u8, i as u64, &d.iter().map(|&s| alphabet[s]).collect::<Vec<_>>()))
            .collect();
        let response: Vec<u32> = response.iter().map(|&s| if s < 4 { alphabet[s] } else { sep }).collect();
        let (_dir, index) = build(vocab.clone(), docs.clone());

        let longest = index.longest_matches(&response);
        let brute = brute_longest(&docs, &response);
        prop_assert_eq!(longest.iter().map(|m| m.end).collect::<Vec<_>>(), brute.clone());
        for (i, m) in longest.iter().enumerate() {
            prop_assert_eq!(m.range.len(), brute_occurrences(&docs, &response[i..m.end]).len() as u64 * (m.end > i) as u64);
        }

        // Maximal spans by definition: not contained in any other position's longest match.
        let total = docs.iter().map(|d| d.tokens.len() as u64).sum::<u64>();
        let ln_p = |t: u32| {
            let c = docs.iter().flat_map(|d| &d.tokens).filter(|&&x| x == t).count() as u64;
            detmath::ln((c + 1) as f64 / (total + vocab.size()) as f64)
        };
        let max_prob = 10f64.powi(max_prob_exp);
        let mut expected = Vec::new();
        for i in 0..response.len() {
            let j = brute[i];
            if j == i || j - i < min_len {
                continue;
            }
            let contained = (0..i).any(|k| brute[k] >= j); // a span starting later cannot contain it
            if contained {
                continue;
            }
            let ln_prob = response[i..j].iter().fold(0.0, |acc, &t| acc + ln_p(t));
            if ln_prob <= detmath::ln(max_prob) {
                expected.push((i, j, brute_occurrences(&docs, &response[i..j]).len() as u64, ln_prob));
            }
        }
        let spans: Vec<_> = index
            .maximal_spans(&response, min_len, max_prob)
            .iter()
            .map(|s| (s.start, s.end, s.count(), s.ln_prob))
            .collect();
        prop_assert_eq!(spans, expected);
    }
}

#[test]
fn separator_never_matches_and_spans_stop_at_document_end() {
    let (_dir, index) = build(
        Vocab::Bytes,
        text_docs(&["hello world", "world peace", "abc"]),
    );
    assert_eq!(index.count(&[255]), 0);
    assert_eq!(index.count(&bytes("world")), 2);
    // "world" ends document 0: what follows is the end of the document once, " peace" once.
    let next = index.next_tokens(&bytes("world"));
    assert_eq!((next.total, next.end_of_document), (2, 1));
    assert_eq!(next.tokens, vec![(b' ' as u32, 1)]);
    // "world" + separator + "world" occurs in the concatenation, but never as a match.
    let mut across = bytes("world");
    across.push(255);
    across.extend(bytes("world"));
    assert_eq!(index.count(&across), 0);
    // "ldwor" spans the boundary between "...world" and "world..." of no document.
    assert_eq!(index.count(&bytes("ldwor")), 0);
    // A response continuing past a document's end: the match stops there.
    let response = bytes("hello worldabc");
    let m = index.longest_matches(&response);
    assert_eq!(m[0].end, 11);
    assert_eq!(m[11].end, 14);
    let spans = index.maximal_spans(&response, 1, 1.0);
    assert_eq!(
        spans.iter().map(|s| (s.start, s.end)).collect::<Vec<_>>(),
        vec![(0, 11), (11, 14)]
    );
}

#[test]
fn empty_response_and_absent_tokens_give_nothing() {
    let (_dir, index) = build(Vocab::Bytes, text_docs(&["some text here"]));
    assert!(index.longest_matches(&[]).is_empty());
    assert!(index.maximal_spans(&[], 1, 1.0).is_empty());
    assert_eq!(index.count(&bytes("z")), 0);
    assert_eq!(index.count(&[300]), 0, "beyond the byte vocabulary");
    let m = index.longest_matches(&bytes("zzz"));
    assert!(m.iter().all(|m| m.range.is_empty()));
    assert_eq!(
        index.next_tokens(&bytes("zq")),
        crate::NextTokens::default()
    );
}

#[test]
fn empty_index_answers_nothing() {
    let (_dir, index) = build(Vocab::Tokens { size: 10 }, Vec::new());
    assert_eq!(index.num_tokens(), 0);
    assert_eq!(index.count(&[1]), 0);
    assert!(index.maximal_spans(&[1, 2, 3], 1, 1.0).is_empty());
}

#[test]
fn token_width_fits_the_vocabulary() {
    for (vocab, width) in [
        (Vocab::Bytes, 1),
        (Vocab::Tokens { size: 49_152 }, 2),
        (Vocab::Tokens { size: 65_535 }, 2),
        (Vocab::Tokens { size: 65_536 }, 4),
    ] {
        let (dir, index) = build(vocab, vec![doc(0, 0, 0, 0, &[1, 2, 3])]);
        assert_eq!(index.manifest().token_width, width);
        assert_eq!(
            std::fs::metadata(dir.path().join("tokens.bin"))
                .unwrap()
                .len(),
            4 * width as u64
        );
    }
}

#[test]
fn pointer_width_is_the_bytes_for_n() {
    assert_eq!(pointer_width(0), 1);
    assert_eq!(pointer_width(255), 1);
    assert_eq!(pointer_width(256), 2);
    assert_eq!(pointer_width(u32::MAX as u64), 4);
    assert_eq!(pointer_width(1 << 32), 5);
    assert_eq!(pointer_width(1 << 40), 6);
}

#[test]
fn unigram_probability_is_add_one_smoothed() {
    let (_dir, index) = build(Vocab::Bytes, text_docs(&["aab"]));
    // T = 3, V = 255.
    assert_eq!(index.unigram_ln_prob(b'a' as u32), detmath::ln(3.0 / 258.0));
    assert_eq!(index.unigram_ln_prob(b'z' as u32), detmath::ln(1.0 / 258.0));
}
