//! Who decides when a block is made and what goes in it.
//!
//! A driver only orders and schedules; executing and committing is [`Chain::produce_block`]'s
//! job, the same for every driver. This issue ships [`Solo`], a single sequencer; a BFT driver
//! plugs in behind the same trait.

use crate::chain::Chain;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// A consensus driver: runs until `shutdown` flips to true.
pub trait Consensus: Send + 'static {
    fn name(&self) -> &'static str;
    fn run(
        self: Box<Self>,
        chain: Arc<Chain>,
        shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// When Solo makes blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mining {
    /// A block as soon as transactions are waiting. Transactions that arrive while a block is
    /// being committed go into the next one together, so throughput grows with load while a
    /// single sender still sees one block per transaction.
    Instant,
    /// A block every interval, empty or not.
    Interval(Duration),
}

/// Single-sequencer consensus: this node orders transactions by arrival and seals blocks alone.
pub struct Solo {
    pub mining: Mining,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Consensus for Solo {
    fn name(&self) -> &'static str {
        "solo"
    }

    fn run(
        self: Box<Self>,
        chain: Arc<Chain>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut ticker = match self.mining {
                Mining::Interval(d) => {
                    Some(tokio::time::interval_at(tokio::time::Instant::now() + d, d))
                }
                Mining::Instant => None,
            };
            loop {
                let allow_empty = tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = chain.pool.arrived.notified(), if ticker.is_none() => false,
                    _ = async { ticker.as_mut().expect("interval mode").tick().await }, if ticker.is_some() => true,
                };
                // Keep sealing while transactions are waiting (they may have arrived during
                // the previous commit).
                let mut allow_empty = allow_empty;
                loop {
                    let c = chain.clone();
                    let made = tokio::task::spawn_blocking(move || {
                        c.produce_block(unix_now(), allow_empty)
                    })
                    .await;
                    allow_empty = false;
                    match made {
                        Ok(Ok(Some(_))) if ticker.is_none() && !chain.pool.is_empty() => continue,
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "block production failed; retrying in 1 s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "block production panicked");
                            break;
                        }
                    }
                }
            }
        })
    }
}
