//! The generation loop: prefill the prompt, then one token at a time until an end-of-generation
//! token, a stop string or `max_tokens`, streaming text as it becomes whole UTF-8.

use serde::Serialize;

use crate::LlmError;
use crate::lora::LoraAdapter;
use crate::model::{KvCache, Llama};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its answer, or a stop string was reached.
    Stop,
    /// `max_tokens` (or the context) ran out.
    Length,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish_reason: FinishReason,
}

/// Generates a continuation of `prompt` (token ids). `on_text` receives each new piece of text
/// as soon as it is complete; returning `false` from it stops generation (a client went away).
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &SamplingParams,
    on_text: impl FnMut(&str) -> bool,
) -> Result<Completion, LlmError> {
    generate_with(model, None, tokenizer, prompt, params, on_text)
}

/// As [`generate`], through a LoRA adapter.
pub fn generate_with(
    model: &Llama,
    adapter: Option<&LoraAdapter>,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &SamplingParams,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Completion, LlmError> {
    params.validate()?;
    if prompt.is_empty() {
        return Err(LlmError::BadInput("the prompt is empty".into()));
    }
    let context = model.config().context_length;
    if prompt.len() >= context {
        return Err(LlmError::ContextFull {
            needed: prompt.len() + 1,
            context,
        });
    }
    let mut cache: KvCache = model.new_cache();
    let mut sampler = Sampler::new(params.clone());
    let mut history = prompt.to_vec();
    let mut generated: Vec<u32> = Vec::new();
    let mut emitted = 0usize; // bytes of `text` already handed to on_text
    let mut text = String::new();
    let mut logits = model.forward_with(prompt, &mut cache, adapter)?;
    let hold_back = params.stop.iter().map(String::len).max().unwrap_or(0);
    let finish = loop {
        let token = sampler.sample(&mut logits, &history);
        if tokenizer.is_end_of_generation(token) {
            break FinishReason::Stop;
        }
        generated.push(token);
        history.push(token);
        let decoded = tokenizer.decode(&generated)?;
        // A token can end inside a multi-byte character; wait for the rest of it.
        if !decoded.ends_with('\u{FFFD}') {
            text = decoded;
        }
        if let Some(cut) = params
            .stop
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(cut);
            if cut > emitted {
                on_text(&text[emitted..]);
            }
            emitted = text.len();
            break FinishReason::Stop;
        }
        // Hold back what could still become the start of a stop string.
        let mut safe = text.len().saturating_sub(hold_back.saturating_sub(1));
        while !text.is_char_boundary(safe) {
            safe -= 1;
        }
        if safe > emitted {
            if !on_text(&text[emitted..safe]) {
                emitted = safe;
                break FinishReason::Stop;
            }
            emitted = safe;
        }
        if generated.len() >= params.max_tokens || cache.len() + 1 >= context {
            break FinishReason::Length;
        }
        logits = model.forward_with(&[token], &mut cache, adapter)?;
    };
    if text.len() > emitted {
        on_text(&text[emitted..]);
    }
    Ok(Completion {
        text,
        tokens: generated,
        prompt_tokens: prompt.len(),
        finish_reason: finish,
    })
}
