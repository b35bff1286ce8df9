//! From snapshot rows to training examples: each row is rendered the way the model will later
//! be asked — instruction and chat rows through the model's chat template, with the loss on
//! the assistant's answers only (or on every token), plain-text rows as continued pretraining
//! ending in end-of-sequence — and split into train and held-out sets by a seeded hash of the
//! row, so a row's side never depends on which other rows the snapshot has.

use alloy_primitives::B256;
use openledger_datanet::row::{Role, Row};
use openledger_dataservice::service::CreditedRow;
use openledger_llm::train::Example;
use openledger_llm::{ChatMessage, Model, Segment};
use serde::{Deserialize, Serialize};

use crate::FactoryError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossOn {
    /// The assistant's answers (and their end-of-turn marker).
    #[default]
    Responses,
    /// Every token, prompts included.
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataOptions {
    /// Share of rows held out for evaluation, in [0, 0.5].
    pub eval_fraction: f64,
    pub loss_on: LossOn,
    /// Held-out prompts answered by the base model and by the adapter, side by side.
    pub eval_prompts: usize,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            eval_fraction: 0.1,
            loss_on: LossOn::Responses,
            eval_prompts: 3,
        }
    }
}

impl DataOptions {
    pub fn validate(&self) -> Result<(), FactoryError> {
        if !(0.0..=0.5).contains(&self.eval_fraction) {
            return Err(FactoryError::BadRequest(format!(
                "eval_fraction must be in [0, 0.5], got {}",
                self.eval_fraction
            )));
        }
        if self.eval_prompts > 100 {
            return Err(FactoryError::BadRequest(format!(
                "eval_prompts must be at most 100, got {}",
                self.eval_prompts
            )));
        }
        Ok(())
    }
}

/// A held-out conversation: the prompt and the answer the datanet gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalPrompt {
    pub row: B256,
    pub messages: Vec<ChatMessage>,
    pub reference: String,
}

#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub train: Vec<Example>,
    pub eval: Vec<Example>,
    /// Row hashes of `train` and `eval`, index for index.
    pub train_rows: Vec<B256>,
    pub eval_rows: Vec<B256>,
    pub eval_prompts: Vec<EvalPrompt>,
    /// Rows that gave no example, and why.
    pub skipped: Vec<(B256, String)>,
}

/// The conversation a row stands for (`None` for plain text).
fn conversation(row: &Row) -> Option<Vec<ChatMessage>> {
    match row {
        Row::Text { .. } => None,
        Row::InstructionResponse {
            instruction,
            input,
            response,
        } => {
            let prompt = if input.is_empty() {
                instruction.clone()
            } else {
                format!("{instruction}\n\n{input}")
            };
            Some(vec![
                ChatMessage::new("user", &prompt),
                ChatMessage::new("assistant", response),
            ])
        }
        Row::Chat { messages } => Some(
            messages
                .iter()
                .map(|m| {
                    let role = match m.role {
                        Role::System => "system",
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    };
                    ChatMessage::new(role, &m.content)
                })
                .collect(),
        ),
    }
}

/// Where a row falls in [0, 1): a seeded hash of the row, compared with the held-out share.
fn draw(row: &B256, seed: u64) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(row.as_slice());
    let bytes = hasher.finalize();
    let draw = u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"));
    draw as f64 / (u64::MAX as f64 + 1.0)
}

/// Turns snapshot rows into train and held-out examples for `model`.
pub fn build_dataset(
    rows: &[CreditedRow],
    model: &Model,
    options: &DataOptions,
    seed: u64,
) -> Result<Dataset, FactoryError> {
    options.validate()?;
    let all_tokens = options.loss_on == LossOn::All;
    let mut dataset = Dataset::default();
    let mut usable = Vec::with_capacity(rows.len());
    for credited in rows {
        let example = match conversation(&credited.row) {
            None => {
                let text = credited.row.text_content();
                let mut example = model
                    .tokenizer
                    .encode_segments(
                        &[Segment {
                            text: text.to_string(),
                            trained: true,
                        }],
                        true,
                    )
                    .map_err(FactoryError::Model)?;
                if let Some(eos) = model.tokenizer.eos() {
                    example.tokens.push(eos);
                    example.trained.push(true);
                }
                example
            }
            Some(messages) => {
                let template = model.chat.as_ref().ok_or_else(|| {
                    FactoryError::BadRequest(
                        "the base model has no chat template, so instruction and chat rows cannot be rendered; use a chat model or a text datanet".into(),
                    )
                })?;
                let segments = match template.segments(&messages) {
                    Ok(s) => s,
                    Err(e) => {
                        dataset.skipped.push((credited.hash, e.to_string()));
                        continue;
                    }
                };
                model
                    .tokenizer
                    .encode_segments(&segments, all_tokens)
                    .map_err(FactoryError::Model)?
            }
        };
        if example.loss_tokens() == 0 {
            dataset
                .skipped
                .push((credited.hash, "no assistant answer to learn".into()));
            continue;
        }
        usable.push((draw(&credited.hash, seed), credited, example));
    }
    // A small snapshot can draw no row below the share: hold out the lowest draw then, so an
    // eval split that was asked for exists whenever there are two rows to split.
    let threshold = match usable.iter().map(|u| u.0).min_by(f64::total_cmp) {
        Some(lowest) if options.eval_fraction > 0.0 && usable.len() >= 2 => {
            options.eval_fraction.max(lowest + f64::EPSILON)
        }
        _ => options.eval_fraction,
    };
    for (draw, credited, example) in usable {
        if draw < threshold {
            if let Some(messages) = conversation(&credited.row)
                && let Some(last) = messages.iter().rposition(|m| m.role == "assistant")
                && dataset.eval_prompts.len() < options.eval_prompts
            {
                dataset.eval_prompts.push(EvalPrompt {
                    row: credited.hash,
                    messages: messages[..last].to_vec(),
                    reference: messages[last].content.clone(),
                });
            }
            dataset.eval.push(example);
            dataset.eval_rows.push(credited.hash);
        } else {
            dataset.train.push(example);
            dataset.train_rows.push(credited.hash);
        }
    }
    // A tiny snapshot can hash every row to one side; training needs at least one row.
    if dataset.train.is_empty() && !dataset.eval.is_empty() {
        dataset.train = std::mem::take(&mut dataset.eval);
        dataset.train_rows = std::mem::take(&mut dataset.eval_rows);
        dataset.eval_prompts.clear();
    }
    if dataset.train.is_empty() {
        let reasons: Vec<String> = dataset
            .skipped
            .iter()
            .take(3)
            .map(|(row, why)| format!("{row}: {why}"))
            .collect();
        return Err(FactoryError::BadRequest(format!(
            "the snapshot has no usable training rows ({} rows, {} skipped{}{})",
            rows.len(),
            dataset.skipped.len(),
            if reasons.is_empty() { "" } else { "; e.g. " },
            reasons.join("; ")
        )));
    }
    Ok(dataset)
}
