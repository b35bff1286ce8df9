//! A tiny random llama, written as a real GGUF (quantized weights, byte-level BPE tokenizer,
//! ChatML template), so tests go through exactly the loading path real models take.

use std::io::Cursor;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::tokenizer::byte_to_char;

/// Shape of the test model.
#[derive(Debug, Clone)]
pub struct TinyConfig {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub layers: usize,
    pub context: usize,
    pub seed: u64,
    /// How the linear layers and the embedding are stored (K-quants need widths that are
    /// multiples of 256).
    pub weight_type: GgmlDType,
}

impl Default for TinyConfig {
    fn default() -> Self {
        Self {
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            ffn: 128,
            layers: 2,
            context: 256,
            seed: 1,
            weight_type: GgmlDType::Q8_0,
        }
    }
}

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES: [(&str, &str); 4] = [("t", "h"), ("th", "e"), ("Ġ", "t"), ("i", "n")];

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The vocabulary: 3 special tokens, the 256 byte tokens, then one token per merge.
pub fn tiny_vocabulary() -> Vec<String> {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.extend(byte_to_char().iter().map(|c| c.to_string()));
    tokens.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    tokens
}

struct Rng(u64);

impl Rng {
    fn normal(&mut self) -> f32 {
        // Sum of uniforms: close enough to normal for random weights, and reproducible.
        let mut sum = 0.0f32;
        for _ in 0..4 {
            sum += (crate::sampling::splitmix64(&mut self.0) >> 40) as f32 / (1u64 << 24) as f32;
        }
        (sum - 2.0) * 1.7
    }
}

/// The bytes of a GGUF file holding a random llama of shape `config`.
pub fn tiny_llama_gguf(config: &TinyConfig) -> Vec<u8> {
    let mut rng = Rng(config.seed);
    let tokens = tiny_vocabulary();
    let vocab = tokens.len();
    let head_dim = config.hidden / config.heads;
    let kv = config.kv_heads * head_dim;
    let device = Device::Cpu;
    let mut weight = |rows: usize, cols: usize, dtype: GgmlDType| -> QTensor {
        let scale = 1.0 / (cols as f32).sqrt();
        let data: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * scale).collect();
        let t = Tensor::from_vec(data, (rows, cols), &device).expect("shape matches");
        QTensor::quantize(&t, dtype).expect("quantizable shape")
    };
    let ones = |n: usize| {
        QTensor::quantize(
            &Tensor::ones(n, candle_core::DType::F32, &device).expect("ones"),
            GgmlDType::F32,
        )
        .expect("f32")
    };
    let mut tensors: Vec<(String, QTensor)> = vec![(
        "token_embd.weight".into(),
        weight(vocab, config.hidden, config.weight_type),
    )];
    for i in 0..config.layers {
        let p = |n: &str| format!("blk.{i}.{n}.weight");
        tensors.push((p("attn_norm"), ones(config.hidden)));
        tensors.push((
            p("attn_q"),
            weight(config.hidden, config.hidden, config.weight_type),
        ));
        tensors.push((p("attn_k"), weight(kv, config.hidden, config.weight_type)));
        tensors.push((p("attn_v"), weight(kv, config.hidden, config.weight_type)));
        tensors.push((
            p("attn_output"),
            weight(config.hidden, config.hidden, config.weight_type),
        ));
        tensors.push((p("ffn_norm"), ones(config.hidden)));
        tensors.push((
            p("ffn_gate"),
            weight(config.ffn, config.hidden, config.weight_type),
        ));
        tensors.push((
            p("ffn_up"),
            weight(config.ffn, config.hidden, config.weight_type),
        ));
        tensors.push((
            p("ffn_down"),
            weight(config.hidden, config.ffn, config.weight_type),
        ));
    }
    tensors.push(("output_norm.weight".into(), ones(config.hidden)));

    let u32v = |n: usize| Value::U32(n as u32);
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", u32v(config.hidden)),
        ("llama.feed_forward_length", u32v(config.ffn)),
        ("llama.block_count", u32v(config.layers)),
        ("llama.attention.head_count", u32v(config.heads)),
        ("llama.attention.head_count_kv", u32v(config.kv_heads)),
        ("llama.context_length", u32v(config.context)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.vocab_size", u32v(vocab)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(
                (0..vocab)
                    .map(|i| Value::I32(if i < SPECIALS.len() { 3 } else { 1 }))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.merges",
            Value::Array(
                MERGES
                    .iter()
                    .map(|(a, b)| Value::String(format!("{a} {b}")))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.chat_template", Value::String(CHATML.into())),
    ];
    let metadata_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata_refs, &tensor_refs).expect("in-memory write");
    out.into_inner()
}

/// The tiny model, loaded.
pub fn tiny_model(config: &TinyConfig) -> crate::Model {
    crate::Model::read(&mut Cursor::new(tiny_llama_gguf(config))).expect("the test model loads")
}
