//! Paying for inference on the node: API keys bound to accounts, admission against the
//! account's deposit in the `Inference` precompile, and a settler that submits the usage
//! records to the `Settlement` precompile with the node's operator key.
//!
//! A priced model is a published fine-tune (its adapter's hash is in the `Models` registry with
//! a non-zero price). The base model and unpublished adapters are free and need no key. For a
//! priced model a request must carry `Authorization: Bearer KEY` for an account that approved
//! this node's operator, and the account's deposit, less what it already owes here (served but
//! unsettled, or reserved by requests in flight) and less any withdrawal it announced, must
//! cover the worst case: (prompt + max_tokens) × price. The fee charged is what the request
//! really used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::datanet::now;

use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolInterface};
use anyhow::{Context, Result};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openledger_chain::modules::inference::IInference;
use openledger_chain::modules::models::IModels;
use openledger_chain::modules::settlement::{ISettlement, MAX_BATCH};
use openledger_dataservice::auth::{self, SignedHeaders};
use openledger_factory::api::signed_target;
use openledger_primitives::addresses::{INFERENCE, MODELS, SETTLEMENT};
use openledger_primitives::{Address, B256, Bytes as EvmBytes, U256};
use openledger_wallet::{RpcClient, TransferError, format_open, send_call};
use openlora::metering::{self, Admission, Meter, MeterError, Usage, UsageLog, UsageRecord};
use serde_json::{Value, json};

fn hex32(bytes: &[u8; 32]) -> String {
    format!("0x{}", alloy_primitives::hex::encode(bytes))
}

/// API keys and the accounts they act for. Only each key's BLAKE3 is stored, so the file does
/// not leak usable keys.
pub struct ApiKeys {
    path: PathBuf,
    keys: Mutex<BTreeMap<String, Address>>,
}

impl ApiKeys {
    pub fn open(path: &Path) -> Result<Self> {
        let keys = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not an API key file; move it away to start afresh",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Self {
            path: path.to_path_buf(),
            keys: Mutex::new(keys),
        })
    }

    fn digest(key: &str) -> String {
        blake3::hash(key.as_bytes()).to_hex().to_string()
    }

    /// A new key for `account`, saved before it is returned.
    pub fn issue(&self, account: Address) -> Result<String> {
        let key = format!(
            "olk-{}",
            alloy_primitives::hex::encode(rand::random::<[u8; 24]>())
        );
        let mut keys = self.keys.lock().expect("api keys lock");
        keys.insert(Self::digest(&key), account);
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&*keys)?)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .with_context(|| format!("cannot save {}", self.path.display()))?;
        Ok(key)
    }

    pub fn account(&self, key: &str) -> Option<Address> {
        let keys = self.keys.lock().expect("api keys lock");
        keys.get(&Self::digest(key)).copied()
    }
}

/// Finds the content hash of the adapter a served model name stands for (`None`: the base
/// model, or no adapter by that name).
pub type AdapterHashes = Box<dyn Fn(&str) -> Option<B256> + Send + Sync>;

/// The [`Meter`] of a node: prices and deposits from the chain, usage into a [`UsageLog`].
pub struct ChainMeter {
    rpc: RpcClient,
    operator: Address,
    keys: Arc<ApiKeys>,
    log: Arc<UsageLog>,
    adapters: AdapterHashes,
    /// Worst-case fees of requests in flight, per account.
    reserved: Mutex<BTreeMap<String, u128>>,
}

fn unavailable(e: impl std::fmt::Display) -> MeterError {
    MeterError::Unavailable(format!("cannot read the chain to price this request: {e}"))
}

impl ChainMeter {
    pub fn new(
        rpc_url: &str,
        operator: Address,
        keys: Arc<ApiKeys>,
        log: Arc<UsageLog>,
        adapters: AdapterHashes,
    ) -> Self {
        Self {
            rpc: RpcClient::with_timeout(rpc_url, Duration::from_secs(10)),
            operator,
            keys,
            log,
            adapters,
            reserved: Mutex::new(BTreeMap::new()),
        }
    }

    fn view<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return, MeterError> {
        crate::chaintx::view(&self.rpc, to, call, |e| e.into()).map_err(unavailable)
    }

    /// The published model behind `name` and its price (`None`: free).
    fn price(&self, name: &str) -> Result<Option<(u64, u128)>, MeterError> {
        let Some(hash) = (self.adapters)(name) else {
            return Ok(None);
        };
        let id = self.view(MODELS, IModels::modelByAdapterCall { adapterHash: hash })?;
        if id == 0 {
            return Ok(None);
        }
        let model = self.view(MODELS, IModels::getModelCall { modelId: id })?;
        let price: u128 = model.pricePer1kTokens.saturating_to();
        Ok((price > 0).then_some((id, price)))
    }
}

impl Meter for ChainMeter {
    fn admit(
        &self,
        api_key: Option<&str>,
        model: &str,
        max_tokens: u64,
    ) -> Result<Admission, MeterError> {
        let Some((model_id, price)) = self.price(model)? else {
            return Ok(Admission {
                account: None,
                model_id: 0,
                price_per_1k: 0,
                reserved: 0,
            });
        };
        let key = api_key.ok_or_else(|| {
            MeterError::Unauthorized(format!(
                "model {model:?} costs {} OPEN per 1,000 tokens: send an API key (Authorization: Bearer KEY; `openledger inference api-key` makes one)",
                format_open(U256::from(price))
            ))
        })?;
        let account = self.keys.account(key).ok_or_else(|| {
            MeterError::Unauthorized(
                "this API key is not known to this node; make one with `openledger inference api-key`".into(),
            )
        })?;
        let approved = self.view(
            INFERENCE,
            IInference::isOperatorCall {
                account,
                operator: self.operator,
            },
        )?;
        if !approved {
            return Err(MeterError::PaymentRequired(format!(
                "account {account} has not approved this node's operator {} to charge its deposit; run `openledger inference deposit AMOUNT --operator {}`",
                self.operator, self.operator
            )));
        }
        let deposit = self.view(INFERENCE, IInference::depositOfCall { account })?;
        let name = account.to_string();
        let need = metering::fee(max_tokens, price);
        let mut reserved = self.reserved.lock().expect("reservations lock");
        let held = reserved.get(&name).copied().unwrap_or(0);
        let committed = U256::from(self.log.owed(&name))
            + U256::from(held)
            + deposit.withdrawRequested
            + U256::from(need);
        if committed > deposit.balance {
            let available = deposit.balance.saturating_sub(committed - U256::from(need));
            return Err(MeterError::PaymentRequired(format!(
                "account {account} cannot pay for this request: up to {max_tokens} tokens of {model:?} cost up to {} OPEN, and its deposit has {} OPEN available ({} OPEN deposited, {} owed or in flight, {} announced for withdrawal); deposit more with `openledger inference deposit`",
                format_open(U256::from(need)),
                format_open(available),
                format_open(deposit.balance),
                format_open(U256::from(self.log.owed(&name) + held)),
                format_open(deposit.withdrawRequested),
            )));
        }
        *reserved.entry(name.clone()).or_default() += need;
        Ok(Admission {
            account: Some(name),
            model_id,
            price_per_1k: price,
            reserved: need,
        })
    }

    fn finish(&self, admission: &Admission, usage: Option<Usage>) {
        let Some(account) = &admission.account else {
            return;
        };
        // Record first, then release: the account is never briefly under-committed.
        if let Some(u) = usage {
            let fee = metering::fee(
                u.prompt_tokens + u.completion_tokens,
                admission.price_per_1k,
            );
            let record = UsageRecord {
                request_id: hex32(&rand::random::<[u8; 32]>()),
                account: account.clone(),
                model_id: admission.model_id,
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                fee: fee.to_string(),
                response_hash: hex32(&u.response_hash),
                attribution_hash: hex32(&u.attribution_hash),
                shares: u.shares,
                created: now(),
            };
            if let Err(e) = self.log.record(record) {
                // The answer was served; losing its record loses the fee, never data.
                tracing::error!("cannot record usage for {account}: {e}");
            }
        }
        let mut reserved = self.reserved.lock().expect("reservations lock");
        if let Some(held) = reserved.get_mut(account) {
            *held = held.saturating_sub(admission.reserved);
            if *held == 0 {
                reserved.remove(account);
            }
        }
    }
}

fn to_usage(r: &UsageRecord) -> Result<ISettlement::Usage> {
    Ok(ISettlement::Usage {
        requestId: r.request_id.parse().context("request id")?,
        account: r.account.parse().context("account")?,
        modelId: r.model_id,
        promptTokens: r.prompt_tokens,
        completionTokens: r.completion_tokens,
        fee: r.fee.parse().context("fee")?,
        responseHash: r.response_hash.parse().context("response hash")?,
        attributionHash: r.attribution_hash.parse().context("attribution hash")?,
        shares: r
            .shares
            .iter()
            .map(|&(id, ppm)| ISettlement::Share {
                contributionId: id,
                partsPerMillion: ppm,
            })
            .collect(),
    })
}

/// Why a settle transaction failed: the chain's own error if it reverted.
enum SettleError {
    /// The chain refused the batch (permanent for these records).
    Refused(String),
    /// The node could not be reached or the transaction not sent (try again later).
    Transient(anyhow::Error),
}

fn send_batch(
    client: &RpcClient,
    operator: &PrivateKeySigner,
    records: &[UsageRecord],
) -> Result<String, SettleError> {
    let batch = records
        .iter()
        .map(to_usage)
        .collect::<Result<Vec<_>>>()
        .map_err(|e| SettleError::Refused(format!("malformed usage record: {e:#}")))?;
    let input = ISettlement::settleCall { batch }.abi_encode();
    match send_call(
        client,
        operator,
        SETTLEMENT,
        U256::ZERO,
        EvmBytes::from(input),
    ) {
        Ok(receipt) if receipt["status"].as_str() == Some("0x1") => Ok(receipt["transactionHash"]
            .as_str()
            .unwrap_or("?")
            .to_string()),
        Ok(receipt) => Err(SettleError::Refused(format!(
            "transaction {} failed",
            receipt["transactionHash"].as_str().unwrap_or("?")
        ))),
        Err(TransferError::Rpc(e)) => match e.revert_data() {
            Some(data) => Err(SettleError::Refused(explain_settlement(&data))),
            None => Err(SettleError::Transient(e.into())),
        },
        Err(e) => Err(SettleError::Transient(e.into())),
    }
}

/// A Settlement or Inference revert in words.
pub fn explain_settlement(data: &[u8]) -> String {
    use IInference::IInferenceErrors as D;
    use ISettlement::ISettlementErrors as S;
    if let Ok(e) = S::abi_decode(data) {
        return match e {
            S::EmptyBatch(_) => "the batch is empty".into(),
            S::BatchTooLarge(e) => format!("a batch holds at most {} records", e.max),
            S::AlreadySettled(e) => format!("request {} is already settled", e.requestId),
            S::UnknownModel(e) => format!("model {} is not published", e.modelId),
            S::FeeMismatch(e) => format!(
                "request {} reports a fee of {} wei but its tokens cost {} wei",
                e.requestId, e.reported, e.computed
            ),
            S::SharesNotWhole(e) => format!(
                "request {}'s attribution sums to {} parts per million, not 1,000,000",
                e.requestId, e.partsPerMillion
            ),
            S::TooManyShares(e) => format!(
                "request {} attributes to more than {} contributions",
                e.requestId, e.max
            ),
            S::DuplicateShare(e) => format!(
                "request {} names contribution {} twice",
                e.requestId, e.contributionId
            ),
            S::ContributionNotPayable(e) => format!(
                "request {} attributes to contribution {}, which is not an accepted row of the model's training datanets",
                e.requestId, e.contributionId
            ),
            S::ConservationViolated(e) => format!(
                "credits {} would not equal debits {}",
                e.credited, e.debited
            ),
            S::NothingToClaim(_) => "nothing to claim".into(),
        };
    }
    if let Ok(e) = D::abi_decode(data) {
        return match e {
            D::ZeroAmount(_) => "the amount must be more than zero".into(),
            D::InsufficientDeposit(e) => format!(
                "{} has {} OPEN deposited, less than the {} OPEN asked for",
                e.account,
                format_open(e.balance),
                format_open(e.requested)
            ),
            D::WithdrawNotReady(e) => {
                format!("the withdrawal is released at block {}", e.releaseBlock)
            }
            D::NoWithdrawRequested(_) => {
                "no withdrawal was announced (`openledger inference request-withdraw`)".into()
            }
            D::NotOperator(e) => format!(
                "{} has not approved operator {} to charge its deposit",
                e.account, e.operator
            ),
            D::NotSettlement(e) => format!("{} is not the Settlement module", e.caller),
        };
    }
    format!("reverted with 0x{}", alloy_primitives::hex::encode(data))
}

/// Settles what is pending: a batch at a time; when the chain refuses a batch, each record on
/// its own, so one bad record (an account that withdrew, a model that vanished) cannot hold up
/// the others. A record the chain refuses alone is marked settled with the reason, so it is
/// never retried. Returns how many records were settled or refused.
pub fn settle_pending(
    client: &RpcClient,
    operator: &PrivateKeySigner,
    log: &UsageLog,
) -> Result<usize> {
    let records = log.pending(MAX_BATCH);
    if records.is_empty() {
        return Ok(0);
    }
    let ids = |rs: &[UsageRecord]| rs.iter().map(|r| r.request_id.clone()).collect::<Vec<_>>();
    match send_batch(client, operator, &records) {
        Ok(tx) => {
            log.mark_settled(&ids(&records), &tx)?;
            return Ok(records.len());
        }
        Err(SettleError::Transient(e)) => return Err(e),
        Err(SettleError::Refused(why)) => {
            tracing::warn!(
                "settlement refused a batch of {}: {why}; settling one by one",
                records.len()
            );
        }
    }
    for record in &records {
        let one = std::slice::from_ref(record);
        match send_batch(client, operator, one) {
            Ok(tx) => log.mark_settled(&ids(one), &tx)?,
            Err(SettleError::Refused(why)) => {
                tracing::warn!("usage record {} refused: {why}", record.request_id);
                log.mark_settled(&ids(one), &format!("refused: {why}"))?;
            }
            Err(SettleError::Transient(e)) => return Err(e),
        }
    }
    Ok(records.len())
}

/// Runs [`settle_pending`] every `interval` on its own thread, for as long as the process.
pub fn spawn_settler(
    rpc_url: String,
    operator: PrivateKeySigner,
    log: Arc<UsageLog>,
    interval: Duration,
) {
    std::thread::Builder::new()
        .name("settler".into())
        .spawn(move || {
            let client = RpcClient::with_timeout(&rpc_url, Duration::from_secs(30));
            loop {
                std::thread::sleep(interval);
                match settle_pending(&client, &operator, &log) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("settled {n} usage records"),
                    Err(e) => tracing::warn!("settlement deferred: {e:#}"),
                }
            }
        })
        .expect("spawn the settler thread");
}

#[derive(Clone)]
struct BillingState {
    keys: Arc<ApiKeys>,
    log: Arc<UsageLog>,
    operator: Address,
}

/// `POST /v1/keys` (signed by the account: an API key for it), `GET /v1/billing` (the operator
/// to approve), `GET /v1/usage?account=` (unsettled usage).
pub fn router(keys: Arc<ApiKeys>, log: Arc<UsageLog>, operator: Address) -> axum::Router {
    axum::Router::new()
        .route("/v1/keys", post(create_key))
        .route("/v1/billing", get(billing))
        .route("/v1/usage", get(usage))
        .with_state(BillingState {
            keys,
            log,
            operator,
        })
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "code": code, "param": null}})),
    )
        .into_response()
}

async fn create_key(
    State(state): State<BillingState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let signer = auth::verify(
        "POST",
        &signed_target("/v1/keys", &body),
        &SignedHeaders {
            address: header(auth::ADDRESS_HEADER),
            expires: header(auth::EXPIRES_HEADER),
            signature: header(auth::SIGNATURE_HEADER),
        },
        now(),
    );
    let account = match signer {
        Ok(Some(account)) => account,
        Ok(None) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unsigned",
                "sign the request as the account the key pays for (`openledger inference api-key` does it)".into(),
            );
        }
        Err(e) => return error(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()),
    };
    let keys = state.keys.clone();
    match tokio::task::spawn_blocking(move || keys.issue(account)).await {
        Ok(Ok(key)) => Json(json!({
            "key": key,
            "account": account,
            "operator": state.operator,
        }))
        .into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{e:#}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn billing(State(state): State<BillingState>) -> Response {
    Json(json!({
        "operator": state.operator,
        "pending_records": state.log.pending(usize::MAX).len(),
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct UsageQuery {
    account: String,
}

async fn usage(State(state): State<BillingState>, Query(q): Query<UsageQuery>) -> Response {
    let Ok(account) = q.account.parse::<Address>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_value",
            format!("account {:?} is not an address", q.account),
        );
    };
    let name = account.to_string();
    let records: Vec<Value> = state
        .log
        .pending(usize::MAX)
        .into_iter()
        .filter(|r| r.account == name)
        .map(|r| json!(r))
        .collect();
    Json(json!({
        "account": name,
        "owed": state.log.owed(&name).to_string(),
        "pending": records,
    }))
    .into_response()
}

/// The BLAKE3 of a PEFT directory's `adapter_model.safetensors`: the hash the factory stores
/// and publishes an adapter under.
pub fn peft_adapter_hash(dir: &Path) -> Option<B256> {
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).ok()?;
    Some(B256::from(*blake3::hash(&bytes).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_attribution_records_hash_a_response_alike() {
        // Settlement ties a usage record to its attribution record by this hash.
        let tokens = [1u32, 70_000, 42];
        assert_eq!(
            openlora::metering::response_hash(&tokens),
            openledger_attribution::response_hash(&tokens)
        );
    }

    #[test]
    fn api_keys_persist_by_digest_and_map_to_their_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-keys.json");
        let keys = ApiKeys::open(&path).unwrap();
        let alice = Address::repeat_byte(0xa1);
        let key = keys.issue(alice).unwrap();
        assert!(key.starts_with("olk-"));
        assert_eq!(keys.account(&key), Some(alice));
        assert_eq!(keys.account("olk-guess"), None);
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(!stored.contains(&key), "only digests are stored");
        let reopened = ApiKeys::open(&path).unwrap();
        assert_eq!(reopened.account(&key), Some(alice));
        std::fs::write(&path, "not json").unwrap();
        let err = ApiKeys::open(&path).err().unwrap().to_string();
        assert!(err.contains("api-keys.json"), "{err}");
    }
}
