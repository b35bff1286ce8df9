//! The tokenizer a GGUF file carries (byte-level BPE), rebuilt with `tokenizers` so that it
//! splits text exactly as llama.cpp does for the same file.
//!
//! llama.cpp picks the pre-tokenizer (how text is cut before BPE merges) by the file's
//! `tokenizer.ggml.pre`. SmolLM2 says `smollm`: every digit is its own piece, then the GPT-2
//! pattern, with no space added in front — `Digits(individual)` followed by
//! `ByteLevel(add_prefix_space = false)`. candle's own GGUF tokenizer adds that prefix space,
//! which turns `<|im_start|>user` into `Ġuser`; hence this module.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use crate::LlmError;
use crate::config::string;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// `tokenizer.ggml.pre` values whose llama.cpp pre-tokenizer is "each digit alone, then GPT-2".
const DIGIT_SPLITTING_PRE: [&str; 7] = [
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "minerva",
];

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    add_bos: bool,
    /// Tokens that end generation: the EOS token, `<|endoftext|>`, `<|im_end|>`, `<|eot_id|>`.
    end_of_generation: Vec<u32>,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("end_of_generation", &self.end_of_generation)
            .finish_non_exhaustive()
    }
}

fn token_id(content: &Content, key: &str) -> Option<u32> {
    match content.metadata.get(key)? {
        Value::U32(v) => Some(*v),
        Value::I32(v) if *v >= 0 => Some(*v as u32),
        Value::U64(v) => u32::try_from(*v).ok(),
        _ => None,
    }
}

impl Tokenizer {
    pub fn from_gguf(content: &Content) -> Result<Self, LlmError> {
        let model = string(content, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(LlmError::Unsupported(format!(
                "tokenizer model {model:?}; only byte-level BPE (\"gpt2\") tokenizers are supported"
            )));
        }
        let pre = content
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("gpt-2");
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = if DIGIT_SPLITTING_PRE.contains(&pre) {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        } else if pre == "gpt-2" || pre == "gpt2" {
            byte_level.into()
        } else {
            return Err(LlmError::Unsupported(format!(
                "pre-tokenizer {pre:?}; supported: gpt-2, {}",
                DIGIT_SPLITTING_PRE.join(", ")
            )));
        };

        let tokens: Vec<String> = content
            .metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| LlmError::BadModel("GGUF has no tokenizer.ggml.tokens".into()))?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<Result<_, _>>()
            .map_err(|_| LlmError::BadModel("tokenizer.ggml.tokens holds a non-string".into()))?;
        let merges: Merges = match content.metadata.get("tokenizer.ggml.merges") {
            None => Vec::new(),
            Some(list) => list
                .to_vec()
                .map_err(|_| LlmError::BadModel("tokenizer.ggml.merges is not a list".into()))?
                .iter()
                .map(|v| {
                    let merge = v
                        .to_string()
                        .map_err(|_| LlmError::BadModel("a merge is not a string".into()))?;
                    let (a, b) = merge.split_once(' ').ok_or_else(|| {
                        LlmError::BadModel(format!("merge {merge:?} is not two tokens"))
                    })?;
                    Ok((a.to_string(), b.to_string()))
                })
                .collect::<Result<_, LlmError>>()?,
        };
        let types: Vec<i32> = content
            .metadata
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|list| list.iter().map(|v| v.to_i32().unwrap_or(1)).collect())
            .unwrap_or_default();

        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if vocab.len() != tokens.len() {
            return Err(LlmError::BadModel(
                "the vocabulary has duplicate tokens".into(),
            ));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| LlmError::BadModel(format!("cannot build the BPE model: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevel::default()));
        let specials: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(**t, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED))
            .map(|(i, _)| AddedToken::from(tokens[i].clone(), true))
            .collect();
        inner
            .add_special_tokens(specials)
            .map_err(|e| LlmError::BadModel(format!("cannot register special tokens: {e}")))?;

        let bos = token_id(content, "tokenizer.ggml.bos_token_id");
        let add_bos = matches!(
            content.metadata.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        let mut end_of_generation: Vec<u32> = token_id(content, "tokenizer.ggml.eos_token_id")
            .into_iter()
            .collect();
        for name in ["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>"] {
            if let Some(id) = inner.token_to_id(name)
                && !end_of_generation.contains(&id)
            {
                end_of_generation.push(id);
            }
        }
        Ok(Self {
            inner,
            bos,
            add_bos,
            end_of_generation,
            vocab_size: tokens.len(),
        })
    }

    /// A Hugging Face `tokenizer.json`, with the special tokens `tokenizer_config.json` names.
    pub fn from_hf(
        tokenizer_json: &std::path::Path,
        config: &serde_json::Value,
    ) -> Result<Self, LlmError> {
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json)
            .map_err(|e| LlmError::BadModel(format!("{}: {e}", tokenizer_json.display())))?;
        // A special token is a string or {"content": string}.
        let named = |key: &str| -> Option<u32> {
            let value = &config[key];
            let text = value.as_str().or_else(|| value["content"].as_str())?;
            inner.token_to_id(text)
        };
        let bos = named("bos_token");
        let mut end_of_generation: Vec<u32> = named("eos_token").into_iter().collect();
        for name in ["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>"] {
            if let Some(id) = inner.token_to_id(name)
                && !end_of_generation.contains(&id)
            {
                end_of_generation.push(id);
            }
        }
        Ok(Self {
            vocab_size: inner.get_vocab_size(true),
            bos,
            add_bos: config["add_bos_token"].as_bool().unwrap_or(false),
            end_of_generation,
            inner,
        })
    }

    /// Writes this tokenizer as a Hugging Face `tokenizer.json`.
    pub fn save_hf(&self, path: &std::path::Path) -> Result<(), LlmError> {
        self.inner
            .save(path, false)
            .map_err(|e| LlmError::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// The beginning-of-sequence token, and whether encoding prepends it.
    pub fn bos(&self) -> (Option<u32>, bool) {
        (self.bos, self.add_bos)
    }

    /// The text of one token id, special tokens included.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are parsed as
    /// such, and BOS is prepended when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if self.add_bos
            && let Some(bos) = self.bos
        {
            ids.push(bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// A rendered conversation as one training example: each segment is tokenized on its own
    /// (so the boundary between prompt and answer is a token boundary) and its tokens carry
    /// the segment's `trained` flag; with `all_tokens` every token is trained on.
    pub fn encode_segments(
        &self,
        segments: &[crate::chat::Segment],
        all_tokens: bool,
    ) -> Result<crate::train::Example, LlmError> {
        let mut example = crate::train::Example {
            tokens: Vec::new(),
            trained: Vec::new(),
        };
        if self.add_bos
            && let Some(bos) = self.bos
        {
            example.tokens.push(bos);
            example.trained.push(false);
        }
        for segment in segments {
            let encoding = self
                .inner
                .encode(segment.text.as_str(), false)
                .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
            example.tokens.extend_from_slice(encoding.get_ids());
            example.trained.extend(std::iter::repeat_n(
                segment.trained || all_tokens,
                encoding.len(),
            ));
        }
        Ok(example)
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))
    }

    /// The end-of-sequence token (what a plain-text training example ends with).
    pub fn eos(&self) -> Option<u32> {
        self.end_of_generation.first().copied()
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// GPT-2's byte ↔ character table: printable Latin-1 bytes stand for themselves, the others
/// are moved to U+0100 and up, so every byte sequence is a string of visible characters.
/// Byte-level vocabularies (and test models) spell their tokens with it.
pub fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[byte as usize] = if printable {
            char::from(byte)
        } else {
            let c = char::from_u32(next_extra).expect("below the surrogates");
            next_extra += 1;
            c
        };
    }
    table
}
