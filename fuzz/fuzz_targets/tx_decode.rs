//! Raw transactions as they arrive over `eth_sendRawTransaction`: decoding, signature recovery
//! and the stateless checks must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openledger_chain::RecoveredTx;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = RecoveredTx::decode(data, 1612, 128 * 1024) {
        let _ = tx.check_static(openledger_chain::SpecId::PRAGUE, 30_000_000);
        let _ = tx.max_cost();
        // What decodes must re-encode to the same bytes.
        assert_eq!(tx.encoded(), data);
    }
});

