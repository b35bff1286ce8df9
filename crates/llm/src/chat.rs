//! Chat prompts in the model's own format.
//!
//! GGUF files carry a Jinja chat template. Rather than embed a template engine, the formats
//! in use are recognised by their markers and rendered here; an unknown template is an error
//! that names it, never a silently wrong prompt.

use serde::{Deserialize, Serialize};

use crate::LlmError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\ncontent<|im_end|>\n` (ChatML: SmolLM, Qwen, …), with the default
    /// system turn the template inserts when the conversation has none.
    ChatMl { default_system: Option<String> },
}

impl ChatTemplate {
    /// Recognises a GGUF `tokenizer.chat_template`.
    pub fn from_template(template: &str) -> Result<Self, LlmError> {
        if template.contains("<|im_start|>") {
            // The default system prompt is the string literal the template emits before the
            // first message when it is not a system one.
            let default_system = template
                .split("<|im_start|>system\n")
                .nth(1)
                .and_then(|rest| rest.split("<|im_end|>").next())
                .filter(|s| !s.contains("{{") && !s.contains('\''))
                .map(str::to_string);
            return Ok(ChatTemplate::ChatMl { default_system });
        }
        Err(LlmError::Unsupported(format!(
            "chat template not recognised (only ChatML for now): {}",
            template.chars().take(80).collect::<String>()
        )))
    }

    /// The prompt for `messages`, ending where the assistant's answer starts.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        let mut out: String = self
            .segments(messages)?
            .into_iter()
            .map(|s| s.text)
            .collect();
        // ChatML's generation prompt.
        out.push_str("<|im_start|>assistant\n");
        Ok(out)
    }

    /// A whole conversation as consecutive pieces of text, each marked with whether it is the
    /// assistant's own output (its answer and the end-of-turn marker after it) — what training
    /// computes the loss on. Concatenated, the pieces are the template's rendering.
    pub fn segments(&self, messages: &[ChatMessage]) -> Result<Vec<Segment>, LlmError> {
        let ChatTemplate::ChatMl { default_system } = self;
        for m in messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                return Err(LlmError::BadInput(format!(
                    "message role {:?}; use system, user or assistant",
                    m.role
                )));
            }
        }
        let mut out = Vec::with_capacity(messages.len() * 2 + 1);
        if let (Some(first), Some(system)) = (messages.first(), default_system)
            && first.role != "system"
        {
            out.push(Segment::prompt(format!(
                "<|im_start|>system\n{system}<|im_end|>\n"
            )));
        }
        for m in messages {
            if m.role == "assistant" {
                out.push(Segment::prompt("<|im_start|>assistant\n".into()));
                out.push(Segment {
                    text: format!("{}<|im_end|>", m.content),
                    trained: true,
                });
                out.push(Segment::prompt("\n".into()));
            } else {
                out.push(Segment::prompt(format!(
                    "<|im_start|>{}\n{}<|im_end|>\n",
                    m.role, m.content
                )));
            }
        }
        Ok(out)
    }
}

/// A piece of a rendered conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    /// The assistant wrote this (loss is computed here when training on responses only).
    pub trained: bool,
}

impl Segment {
    fn prompt(text: String) -> Self {
        Self {
            text,
            trained: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm_template_renders_like_its_jinja() {
        let t = ChatTemplate::from_template(SMOLLM).unwrap();
        let prompt = t.render(&[ChatMessage::new("user", "Hello!")]).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
        );
        let with_system = t
            .render(&[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi"),
            ])
            .unwrap();
        assert!(with_system.starts_with("<|im_start|>system\nBe brief.<|im_end|>"));
        assert!(t.render(&[ChatMessage::new("robot", "x")]).is_err());
    }

    #[test]
    fn segments_mark_the_assistant_answer_and_concatenate_to_the_rendering() {
        let t = ChatTemplate::from_template(SMOLLM).unwrap();
        let conversation = [
            ChatMessage::new("user", "2+2?"),
            ChatMessage::new("assistant", "4"),
        ];
        let segments = t.segments(&conversation).unwrap();
        let trained: Vec<&str> = segments
            .iter()
            .filter(|s| s.trained)
            .map(|s| s.text.as_str())
            .collect();
        assert_eq!(trained, ["4<|im_end|>"]);
        let whole: String = segments.iter().map(|s| s.text.as_str()).collect();
        let prompt = t.render(&conversation[..1]).unwrap();
        assert_eq!(whole, format!("{prompt}4<|im_end|>\n"));
    }

    #[test]
    fn unknown_templates_are_refused() {
        let err = ChatTemplate::from_template("[INST] {{ message }} [/INST]").unwrap_err();
        assert!(err.to_string().contains("not recognised"));
    }
}
