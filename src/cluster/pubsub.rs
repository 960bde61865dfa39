//! The node's one pub/sub connection: subscribes the channels of the families that have
//! subscribers, hands received events to them, and after a lost connection connects again with
//! a capped backoff, subscribes everything again and tells every subscriber to resync. The
//! node-wide [`PUSH_TARGETS_CHANNEL`] is subscribed on every connection.
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::{oneshot, watch};

use super::{
    COMMAND_TIMEOUT, CONNECT_TIMEOUT, ClusterError, PUBSUB_PING_INTERVAL, PUSH_TARGETS_CHANNEL,
    RECONNECT_MAX, RECONNECT_MIN, Remote, SUBSCRIBE_CHUNK, Shared, channel,
};

pub(super) async fn run(
    shared: Arc<Shared>,
    client: redis::Client,
    mut stopped: watch::Receiver<()>,
    connected: oneshot::Sender<()>,
) {
    let mut connected = Some(connected);
    let mut backoff = RECONNECT_MIN;
    let mut was_connected = false;
    loop {
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()) => attempt,
            _ = stopped.changed() => return,
        };
        match attempt {
            Ok(Ok(pubsub)) => {
                backoff = RECONNECT_MIN;
                let (mut sink, mut stream) = pubsub.split();
                shared.set_up(true);
                if was_connected {
                    shared.metrics.cluster.resyncs.fetch_add(1, Relaxed);
                }
                let was_out = shared.outage_logged.swap(false, Relaxed);
                if was_out {
                    log::info!("cluster: Redis is back; subscribers resync from the database");
                }
                if was_connected || was_out {
                    // Every entry is written again at once (Redis may have restarted empty).
                    shared.redis_back.notify_one();
                }
                was_connected = true;
                if let Some(connected) = connected.take() {
                    let _ = connected.send(());
                }
                let mut subscribed = HashSet::new();
                let mut ping = tokio::time::interval(PUBSUB_PING_INTERVAL);
                ping.tick().await;
                let mut changed = true;
                let mut node_wide = false;
                let lost: ClusterError = loop {
                    if !node_wide {
                        match tokio::time::timeout(
                            COMMAND_TIMEOUT,
                            sink.subscribe(PUSH_TARGETS_CHANNEL),
                        )
                        .await
                        {
                            Ok(Ok(())) => node_wide = true,
                            Ok(Err(err)) => break err.into(),
                            Err(_) => break ClusterError::Timeout(COMMAND_TIMEOUT),
                        }
                        // Notices sent while this node was not listening are missed: forget
                        // what was read before.
                        shared.push_targets_changed();
                    }
                    if changed {
                        changed = false;
                        if let Err(err) = sync(&shared, &mut sink, &mut subscribed).await {
                            break err;
                        }
                    }
                    tokio::select! {
                        message = stream.next() => match message {
                            Some(message) => shared.received(
                                message.get_channel_name(),
                                message.get_payload_bytes(),
                            ),
                            None => break ClusterError::Stopped,
                        },
                        _ = shared.subscriptions_changed.notified() => changed = true,
                        _ = ping.tick() => {
                            match tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await {
                                Ok(Ok(_)) => {}
                                Ok(Err(err)) => break err.into(),
                                Err(_) => break ClusterError::Timeout(COMMAND_TIMEOUT),
                            }
                        }
                        _ = stopped.changed() => return,
                    }
                };
                shared.set_up(false);
                // Nothing is subscribed any more: every family subscribes again and resyncs.
                for family in shared.subscribers().families.values_mut() {
                    family.active = false;
                }
                match lost {
                    ClusterError::Stopped => {
                        shared.note_failure("pub/sub", &"the connection was closed")
                    }
                    err => shared.note_failure("pub/sub", &err),
                }
            }
            Ok(Err(err)) => shared.note_failure("connect", &err),
            Err(_) => shared.note_failure("connect", &ClusterError::Timeout(CONNECT_TIMEOUT)),
        }
        if let Some(connected) = connected.take() {
            // The start does not wait for a Redis that is down.
            let _ = connected.send(());
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped.changed() => return,
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// Makes the connection's subscriptions match the families with subscribers; sends `Resync` to
/// the subscribers of each family whose channel became active.
async fn sync(
    shared: &Shared,
    sink: &mut PubSubSink,
    subscribed: &mut HashSet<i64>,
) -> Result<(), ClusterError> {
    let (to_add, to_remove, live_again) = {
        let subscribers = shared.subscribers();
        let mut to_add = Vec::new();
        let mut live_again = Vec::new();
        for (&family_id, family) in &subscribers.families {
            if !subscribed.contains(&family_id) {
                to_add.push(family_id);
            } else if !family.active {
                // Dropped and subscribed again before this task ran: the channel never left.
                live_again.push(family_id);
            }
        }
        let to_remove: Vec<i64> = subscribed
            .iter()
            .filter(|id| !subscribers.families.contains_key(id))
            .copied()
            .collect();
        (to_add, to_remove, live_again)
    };
    for chunk in to_remove.chunks(SUBSCRIBE_CHUNK) {
        let channels: Vec<String> = chunk.iter().map(|&id| channel(id)).collect();
        match tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(channels)).await {
            Ok(result) => result?,
            Err(_) => return Err(ClusterError::Timeout(COMMAND_TIMEOUT)),
        }
        for id in chunk {
            subscribed.remove(id);
        }
    }
    for chunk in to_add.chunks(SUBSCRIBE_CHUNK) {
        let channels: Vec<String> = chunk.iter().map(|&id| channel(id)).collect();
        match tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(channels)).await {
            Ok(result) => result?,
            Err(_) => return Err(ClusterError::Timeout(COMMAND_TIMEOUT)),
        }
        subscribed.extend(chunk.iter().copied());
        activate(shared, chunk);
    }
    activate(shared, &live_again);
    Ok(())
}

/// Marks the families' channels active and tells their subscribers to resync.
fn activate(shared: &Shared, families: &[i64]) {
    let mut subscribers = shared.subscribers();
    for family_id in families {
        if let Some(family) = subscribers.families.get_mut(family_id) {
            family.active = true;
            for (_, sink) in &family.sinks {
                sink.do_send(Remote::Resync);
            }
        }
    }
}
