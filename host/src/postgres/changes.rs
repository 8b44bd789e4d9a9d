//! The change feed: how a write on one replica reaches every other replica's caches.
//!
//! Writers call `tg_changed(kind, key)` in the transaction that makes the change; it adds a
//! row to `changes` and sends `NOTIFY tollgate_changes`, which PostgreSQL delivers at
//! commit. Each replica keeps one connection outside the pool that LISTENs, and on every
//! notification, and every second whatever happens, reads the rows after its position and
//! hands them to its subscribers. So a change is seen within milliseconds while the
//! listener is up, and within a second when it is not (the poll is the backstop).
//!
//! The position is (writing transaction id, row id), and a read takes only rows of
//! transactions older than every one still running: row ids are handed out at insert but
//! commit in any order, so reading by id alone skips a change whose writer commits after a
//! later one's (migration 0009). Rows held back by a running writer are read again a few
//! milliseconds later. A replica whose reads failed for longer than rows are kept tells
//! its subscribers to reload everything.

use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

use super::DbError;

/// The backstop: how often the feed is read without a notification.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long [`ChangeFeed::start`] waits for the listener.
pub const LISTEN_READY_WITHIN: Duration = Duration::from_secs(5);
/// Changes kept for replicas that were away; older rows are pruned.
const KEEP_FOR: &str = "1 hour";

/// One thing that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A row changed: `kind` (`tenant`, `token`, ...) and its key (a tenant id, a token
    /// hash in hex, ...).
    Row {
        /// What kind of record.
        kind: String,
        /// Which one.
        key: String,
    },
    /// Changes were missed (the feed was pruned past this replica's position, or a
    /// subscriber fell behind): reload everything.
    ReloadAll,
}

/// The replica's view of the feed. Dropping it stops the listener.
pub struct ChangeFeed {
    sender: broadcast::Sender<Change>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeFeed")
    }
}

/// Records a change in the caller's transaction (delivered to other replicas at commit).
pub async fn record(tx: &tokio_postgres::Transaction<'_>, kind: &str, key: &str) -> Result<(), DbError> {
    tx.execute("SELECT tg_changed($1, $2)", &[&kind, &key]).await.map_err(|e| DbError::new("recording a change", e))?;
    Ok(())
}

impl ChangeFeed {
    /// Starts following the feed from now, and returns once the listener is up (or after
    /// [`LISTEN_READY_WITHIN`], polling meanwhile). Subscribe before loading what you cache,
    /// so nothing written between the load and the subscription is missed. `url` opens
    /// the listening connection; `pool` serves the reads.
    pub async fn start(url: &str, pool: Pool) -> Result<Self, DbError> {
        let client = pool.get().await.map_err(|e| DbError::new("connecting", e))?;
        // Every transaction older than the oldest running one is done and visible to the
        // caller's load; rows of that one and newer are read from the feed.
        let row = client.query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint", &[]).await.map_err(|e| DbError::new("reading the change feed", e))?;
        drop(client);
        let last = Position { tx: row.get(0), id: 0 };
        // Room for a burst (a bulk set-up writes several rows a tenant); a subscriber that
        // still falls behind reloads everything.
        let (sender, _) = broadcast::channel(32_768);
        let (ready, listening) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(follow(url.to_string(), pool, sender.clone(), last, ready));
        if tokio::time::timeout(LISTEN_READY_WITHIN, listening).await.is_err() {
            tracing::warn!("the change-feed listener is not up yet; changes arrive by polling (within a second) until it is");
        }
        Ok(Self { sender, task })
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}

/// Where a replica is in the feed: the last row it delivered, in (tx, id) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    tx: i64,
    id: i64,
}

/// The first re-read of rows a running writer holds back, doubled up to the poll.
const HELD_BACK_RETRY: Duration = Duration::from_millis(5);

/// Listens and polls until aborted; reconnects the listener when it drops.
async fn follow(url: String, pool: Pool, sender: broadcast::Sender<Change>, mut last: Position, ready: tokio::sync::oneshot::Sender<()>) {
    let (wake_tx, mut wake) = tokio::sync::mpsc::channel::<()>(1);
    // The listener ends by itself once `wake` (dropped with this task) closes.
    tokio::spawn(listen(url, wake_tx, ready));
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    let mut retry: Option<Duration> = None;
    let mut read_ok_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = wake.recv() => {}
            _ = tokio::time::sleep(retry.unwrap_or(POLL_EVERY)), if retry.is_some() => {}
            _ = prune.tick() => {
                if let Ok(client) = pool.get().await {
                    let _ = client.execute(format!("DELETE FROM changes WHERE at < now() - interval '{KEEP_FOR}'").as_str(), &[]).await;
                }
                continue;
            }
        }
        match read_after(&pool, last).await {
            Ok(read) => {
                // Rows may have been pruned while this replica could not read.
                if read_ok_at.elapsed() > KEEP_UNREAD_FOR {
                    let _ = sender.send(Change::ReloadAll);
                }
                read_ok_at = tokio::time::Instant::now();
                for change in read.changes {
                    let _ = sender.send(change);
                }
                last = read.position;
                retry = read.held_back.then(|| retry.map_or(HELD_BACK_RETRY, |r| (r * 2).min(POLL_EVERY)));
            }
            Err(e) => tracing::warn!(error = %e, "reading the change feed failed; retrying within a second"),
        }
    }
}

/// How long a replica may go without reading before rows it never read may be pruned.
const KEEP_UNREAD_FOR: Duration = Duration::from_secs(50 * 60);

/// Rows one read takes at most.
const READ_AT_MOST: i64 = 10_000;

/// One read of the feed.
struct Read {
    changes: Vec<Change>,
    position: Position,
    /// Rows left behind (a writer still running, or a full read): read again shortly.
    held_back: bool,
}

/// The rows after `last` whose writers are older than every transaction still running
/// (none can commit behind them), and the new position.
async fn read_after(pool: &Pool, last: Position) -> Result<Read, DbError> {
    let client = pool.get().await.map_err(|e| DbError::new("connecting", e))?;
    let rows = client
        .query(
            "SELECT id, kind, key, tx::text::bigint, pg_snapshot_xmin(pg_current_snapshot())::text::bigint FROM changes \
             WHERE (tx, id) > ($1::bigint::text::xid8, $2) ORDER BY tx, id LIMIT $3",
            &[&last.tx, &last.id, &READ_AT_MOST],
        )
        .await
        .map_err(|e| DbError::new("reading the change feed", e))?;
    // A full read leaves more behind it: read again at once.
    let (mut changes, mut position, mut held_back) = (Vec::with_capacity(rows.len()), last, rows.len() as i64 == READ_AT_MOST);
    for row in &rows {
        let (tx, running_from): (i64, i64) = (row.get(3), row.get(4));
        if tx >= running_from {
            held_back = true;
            break;
        }
        position = Position { tx, id: row.get(0) };
        changes.push(Change::Row { kind: row.get(1), key: row.get(2) });
    }
    Ok(Read { changes, position, held_back })
}

/// Holds a LISTEN connection; each notification wakes the poller. Reconnects after a pause
/// when the connection drops (the poll covers the gap). Ends when the poller is gone.
async fn listen(url: String, wake: tokio::sync::mpsc::Sender<()>, ready: tokio::sync::oneshot::Sender<()>) {
    let mut ready = Some(ready);
    while !wake.is_closed() {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, mut connection)) => {
                // Reading the connection's messages also drives it (the LISTEN below).
                let (notified, mut notifications) = tokio::sync::mpsc::unbounded_channel::<()>();
                let driver = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(_) = message {
                            let _ = notified.send(());
                        }
                    }
                });
                match client.batch_execute("LISTEN tollgate_changes").await {
                    Ok(()) => loop {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                            // Changes committed before LISTEN took effect are read now.
                            let _ = wake.try_send(());
                        }
                        tokio::select! {
                            notification = notifications.recv() => match notification {
                                Some(()) => {
                                    let _ = wake.try_send(());
                                }
                                None => {
                                    tracing::warn!("the change-feed listener dropped; polling until it reconnects");
                                    break;
                                }
                            },
                            _ = wake.closed() => {
                                driver.abort();
                                return;
                            }
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling until it reconnects"),
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "the change-feed listener cannot connect; polling until it can"),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
