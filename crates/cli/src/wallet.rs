//! `openledger wallet …`: keystore accounts (Ethereum keystore v3) and OPEN transfers.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use openledger_primitives::Address;
use openledger_wallet::{Keystore, RpcClient, format_open, parse_open, send_value};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct KeystoreArgs {
    /// Keystore directory (default ~/.openledger/keystore).
    #[arg(long, env = "OPENLEDGER_KEYSTORE", global = true)]
    pub keystore: Option<PathBuf>,
    /// Read the password from this file instead of asking (first line).
    #[arg(long, global = true)]
    pub password_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum WalletCommand {
    /// Create a new account, encrypted with a password.
    New {
        /// Account name (the keystore file name).
        name: String,
        #[command(flatten)]
        keys: KeystoreArgs,
    },
    /// Import a private key, or an existing keystore v3 file (geth, foundry).
    Import {
        name: String,
        /// Hex private key. Prefer --private-key-file: command lines end up in shell history.
        #[arg(long, conflicts_with_all = ["private_key_file", "file"])]
        private_key: Option<String>,
        #[arg(long, conflicts_with = "file")]
        private_key_file: Option<PathBuf>,
        /// A keystore v3 JSON file to copy in as it is.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        keys: KeystoreArgs,
    },
    /// List accounts in the keystore.
    List {
        #[command(flatten)]
        keys: KeystoreArgs,
    },
    /// Show the OPEN balance of an address or a keystore account.
    Balance {
        /// Address, or the name of a keystore account.
        account: String,
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
        #[command(flatten)]
        keys: KeystoreArgs,
    },
    /// Send OPEN from a keystore account and wait for the receipt.
    Send {
        /// Keystore account name or keystore file path.
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: Address,
        /// Amount in OPEN, e.g. 1.5.
        #[arg(long, allow_hyphen_values = true)]
        value: String,
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
        #[command(flatten)]
        keys: KeystoreArgs,
    },
}

pub fn keystore(args: &KeystoreArgs) -> Result<Keystore> {
    let dir = match &args.keystore {
        Some(d) => d.clone(),
        None => Keystore::default_dir().context("no home directory: pass --keystore DIR")?,
    };
    Ok(Keystore::new(dir))
}

/// The password from --password-file, $OPENLEDGER_PASSWORD, or an interactive prompt.
pub fn password(args: &KeystoreArgs, confirm: bool) -> Result<String> {
    if let Some(path) = &args.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read password file {}", path.display()))?;
        return Ok(text.lines().next().unwrap_or_default().to_string());
    }
    if let Ok(p) = std::env::var("OPENLEDGER_PASSWORD") {
        return Ok(p);
    }
    let first = rpassword::prompt_password("Password: ")
        .context("cannot read a password (no terminal? use --password-file)")?;
    if confirm {
        let again = rpassword::prompt_password("Repeat password: ")?;
        if again != first {
            bail!("the passwords do not match");
        }
    }
    Ok(first)
}

pub fn run(cmd: WalletCommand) -> Result<()> {
    match cmd {
        WalletCommand::New { name, keys } => {
            let store = keystore(&keys)?;
            let pw = password(&keys, true)?;
            let (address, path) = store.create(&name, &pw)?;
            println!(
                "created account {name}: {address}\n  keystore file {}",
                path.display()
            );
        }
        WalletCommand::Import {
            name,
            private_key,
            private_key_file,
            file,
            keys,
        } => {
            let store = keystore(&keys)?;
            let key = match (private_key, private_key_file) {
                (Some(k), _) => Some(k),
                (None, Some(path)) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?
                        .trim()
                        .to_string(),
                ),
                (None, None) => None,
            };
            match (key, file) {
                (Some(key), _) => {
                    let pw = password(&keys, true)?;
                    let (address, path) = store.import(&name, &key, &pw)?;
                    println!(
                        "imported account {name}: {address}\n  keystore file {}",
                        path.display()
                    );
                }
                (None, Some(file)) => {
                    let (address, path) = store.import_file(&file, &name)?;
                    let shown = address
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "(address known after unlock)".into());
                    println!(
                        "imported keystore {name}: {shown}\n  keystore file {}",
                        path.display()
                    );
                }
                (None, None) => bail!("give --private-key, --private-key-file or --file"),
            }
        }
        WalletCommand::List { keys } => {
            let store = keystore(&keys)?;
            let accounts = store.list()?;
            if accounts.is_empty() {
                println!(
                    "no accounts in {} (create one with `openledger wallet new NAME`)",
                    store.dir().display()
                );
            }
            for (name, address) in accounts {
                let shown = address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "(no address field)".into());
                println!("{name}\t{shown}");
            }
        }
        WalletCommand::Balance { account, rpc, keys } => {
            let address = match account.parse::<Address>() {
                Ok(a) => a,
                Err(_) => {
                    let store = keystore(&keys)?;
                    let listed = store.list()?.into_iter().find(|(n, _)| *n == account);
                    match listed {
                        Some((_, Some(address))) => address,
                        // Foundry keystores carry no address: unlock to learn it.
                        Some((_, None)) => {
                            store.unlock(&account, &password(&keys, false)?)?.address()
                        }
                        None => bail!(
                            "{account:?} is neither an address nor an account in {}",
                            store.dir().display()
                        ),
                    }
                }
            };
            let balance = RpcClient::new(rpc).balance(address)?;
            println!("{} OPEN", format_open(balance));
        }
        WalletCommand::Send {
            from,
            to,
            value,
            rpc,
            keys,
        } => {
            let amount = parse_open(&value)?;
            let store = keystore(&keys)?;
            let pw = password(&keys, false)?;
            let signer = store.unlock(&from, &pw)?;
            let client = RpcClient::new(rpc);
            let receipt = send_value(&client, &signer, to, amount)?;
            let status = receipt
                .get("status")
                .and_then(|s| s.as_str())
                .unwrap_or("?");
            let hash = receipt
                .get("transactionHash")
                .and_then(|s| s.as_str())
                .unwrap_or("?");
            let block = receipt
                .get("blockNumber")
                .and_then(|s| s.as_str())
                .unwrap_or("?");
            if status != "0x1" {
                bail!("transaction {hash} failed on chain (status {status}, block {block})");
            }
            println!(
                "sent {} OPEN from {} to {to}\n  transaction {hash} in block {block}",
                format_open(amount),
                signer.address()
            );
        }
    }
    Ok(())
}
