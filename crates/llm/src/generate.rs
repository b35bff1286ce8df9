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
    let context = model.config().context_length;
    let mut decoder = Decoder::new(prompt, params, context)?;
    let mut cache: KvCache = model.new_cache();
    let mut logits = model.forward_with(prompt, &mut cache, adapter)?;
    loop {
        let step = decoder.step(tokenizer, &mut logits, cache.len())?;
        if !step.text.is_empty() && !on_text(&step.text) {
            decoder.stop();
            break;
        }
        match step.next {
            Some(token) => logits = model.forward_with(&[token], &mut cache, adapter)?,
            None => break,
        }
    }
    Ok(decoder.into_completion())
}

/// One sequence's decoding: sampling, the tokens so far and the text released so far. Text is
/// released only when it is whole UTF-8 and cannot turn out to be the start of a stop string.
/// Used by [`generate`] and by batched serving, which steps many decoders with one forward
/// pass.
#[derive(Debug, Clone)]
pub struct Decoder {
    sampler: Sampler,
    history: Vec<u32>,
    generated: Vec<u32>,
    text: String,
    /// Bytes of `text` already released.
    emitted: usize,
    hold_back: usize,
    prompt_tokens: usize,
    context: usize,
    finish: Option<FinishReason>,
}

/// What one decoding step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeStep {
    /// Text that became final with this step (may be empty).
    pub text: String,
    /// The token to feed the model next; `None` once the sequence is finished.
    pub next: Option<u32>,
}

impl Decoder {
    /// Checks the request against the model's context of `context` positions.
    pub fn new(prompt: &[u32], params: &SamplingParams, context: usize) -> Result<Self, LlmError> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(LlmError::BadInput("the prompt is empty".into()));
        }
        if prompt.len() >= context {
            return Err(LlmError::ContextFull {
                needed: prompt.len() + 1,
                context,
            });
        }
        Ok(Self {
            sampler: Sampler::new(params.clone()),
            history: prompt.to_vec(),
            generated: Vec::new(),
            text: String::new(),
            emitted: 0,
            hold_back: params.stop.iter().map(String::len).max().unwrap_or(0),
            prompt_tokens: prompt.len(),
            context,
            finish: None,
        })
    }

    /// Samples from the logits of the last position fed (with `cached` positions now in the
    /// sequence's cache) and advances.
    pub fn step(
        &mut self,
        tokenizer: &Tokenizer,
        logits: &mut [f32],
        cached: usize,
    ) -> Result<DecodeStep, LlmError> {
        if self.finish.is_some() {
            return Ok(DecodeStep {
                text: String::new(),
                next: None,
            });
        }
        let params = self.sampler.params().clone();
        let token = self.sampler.sample(logits, &self.history);
        if tokenizer.is_end_of_generation(token) {
            return Ok(self.end(FinishReason::Stop));
        }
        self.generated.push(token);
        self.history.push(token);
        let decoded = tokenizer.decode(&self.generated)?;
        // A token can end inside a multi-byte character; wait for the rest of it.
        if !decoded.ends_with('\u{FFFD}') {
            self.text = decoded;
        }
        if let Some(cut) = params
            .stop
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(cut);
            self.emitted = self.emitted.min(cut);
            return Ok(self.end(FinishReason::Stop));
        }
        if self.generated.len() >= params.max_tokens || cached + 1 >= self.context {
            return Ok(self.end(FinishReason::Length));
        }
        // Hold back what could still become the start of a stop string.
        let mut safe = self
            .text
            .len()
            .saturating_sub(self.hold_back.saturating_sub(1));
        while !self.text.is_char_boundary(safe) {
            safe -= 1;
        }
        let mut text = String::new();
        if safe > self.emitted {
            text = self.text[self.emitted..safe].to_string();
            self.emitted = safe;
        }
        Ok(DecodeStep {
            text,
            next: Some(token),
        })
    }

    fn end(&mut self, reason: FinishReason) -> DecodeStep {
        self.finish = Some(reason);
        let text = self
            .text
            .get(self.emitted..)
            .unwrap_or_default()
            .to_string();
        self.emitted = self.text.len();
        DecodeStep { text, next: None }
    }

    /// Stops early (the client went away): what was released is the answer.
    pub fn stop(&mut self) {
        self.text.truncate(self.emitted);
        self.finish = Some(FinishReason::Stop);
    }

    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    pub fn into_completion(self) -> Completion {
        Completion {
            text: self.text,
            tokens: self.generated,
            prompt_tokens: self.prompt_tokens,
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
        }
    }
}
