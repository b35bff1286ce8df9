//! Any bytes as a base model (GGUF) or as a LoRA adapter's files (safetensors + config): the
//! loaders must answer with an error, never panic, abort on an absurd allocation, or hang.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use openledger_llm::testing::{TinyConfig, tiny_model};
use openledger_llm::{LoraAdapter, Model};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let _ = Model::read(&mut Cursor::new(body));
        return;
    }
    // An adapter directory: the first line is the config, the rest the safetensors file.
    let split = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("adapter_config.json"), &body[..split]).expect("write");
    std::fs::write(
        dir.path().join("adapter_model.safetensors"),
        body.get(split + 1..).unwrap_or_default(),
    )
    .expect("write");
    thread_local! {
        static MODEL: Model = tiny_model(&TinyConfig::default());
    }
    MODEL.with(|model| {
        let _ = LoraAdapter::load_peft(dir.path(), model.llama.config(), &openledger_llm::Device::Cpu);
    });
});
