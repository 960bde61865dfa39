//! Cluster presence in Redis.
//!
//! - `podo:node:{instance}`: the node instance's heartbeat, `SET .. PX` [`super::NODE_TTL`],
//!   refreshed every [`super::HEARTBEAT_INTERVAL`].
//! - `podo:p:{family}`: a set of `{user}@{instance}` entries, one per member present on an
//!   instance (however many sessions). An entry counts only while its instance's heartbeat
//!   lives. Each heartbeat writes the node's entries again and extends the set's expiry, so a
//!   Redis that restarted empty has them back within one interval (at once when the pub/sub
//!   connection notices), and a family no live node has members in expires by itself.
//!
//! One task writes everything of this node's presence, in order: a join's SADD can never land
//! after the leave that followed it. Each change is published on the family's channel in the
//! same pipeline, after the write, so a node that receives the notice and asks
//! [`super::Cluster::present`] sees the write.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::{
    COMMAND_TIMEOUT, ClusterError, ClusterEvent, Envelope, PIPELINE_CHUNK, Remote, Shared, channel,
    pipeline, query,
};

/// Removes the entry `ARGV[1]` from the set `KEYS[1]` if the heartbeat `KEYS[2]` is gone;
/// answers 1 if it removed it. A script, so the check and the removal are one step in Redis.
const REMOVE_IF_DEAD: &str = "if redis.call('EXISTS', KEYS[2]) == 0 then \
     return redis.call('SREM', KEYS[1], ARGV[1]) end return 0";

fn node_key(instance: &str) -> String {
    format!("podo:node:{instance}")
}

fn family_key(family_id: i64) -> String {
    format!("podo:p:{family_id}")
}

fn entry(user_id: i64, instance: &str) -> String {
    format!("{user_id}@{instance}")
}

/// `(user, instance)` of an entry.
fn parse_entry(entry: &str) -> Option<(i64, &str)> {
    let (user, instance) = entry.split_once('@')?;
    Some((user.parse().ok()?, instance))
}

fn presence_payload(shared: &Shared, user_id: i64, present: bool) -> Vec<u8> {
    let event = ClusterEvent::Presence { user_id, present };
    serde_json::to_vec(&Envelope {
        node: &shared.instance,
        event: &event,
    })
    .unwrap_or_default()
}

pub(super) async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<()>) {
    let mut heartbeat = tokio::time::interval(shared.settings.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sweeps = tokio::time::interval(shared.settings.sweep);
    sweeps.set_missed_tick_behavior(MissedTickBehavior::Delay);
    sweeps.tick().await;
    // Every entry is in Redis and announced since the last failure.
    let mut registered = false;
    loop {
        let beat = tokio::select! {
            _ = heartbeat.tick() => true,
            _ = shared.redis_back.notified() => {
                registered = false;
                true
            }
            _ = shared.presence_changed.notified() => false,
            _ = sweeps.tick() => {
                if !shared.halted.load(Relaxed)
                    && let Err(err) = sweep(&shared).await
                {
                    shared.note_failure("presence sweep", &err);
                }
                continue;
            }
            _ = stopped.changed() => return,
        };
        if shared.halted.load(Relaxed) {
            return;
        }
        let result = if beat {
            heartbeat_and_register(&shared, !registered).await
        } else {
            flush(&shared).await
        };
        match result {
            Ok(()) => registered |= beat,
            Err(err) => {
                registered = false;
                shared.note_failure("presence", &err);
            }
        }
    }
}

/// Writes the entries of members whose local presence changed, and announces each change.
async fn flush(shared: &Shared) -> Result<(), ClusterError> {
    let changes: Vec<(i64, i64, bool)> = {
        let mut presence = shared.presence();
        let dirty = std::mem::take(&mut presence.dirty);
        dirty
            .into_iter()
            .map(|(family_id, user_id)| {
                let present = presence
                    .members
                    .get(&family_id)
                    .is_some_and(|users| users.contains_key(&user_id));
                (family_id, user_id, present)
            })
            .collect()
    };
    let ttl = shared.settings.node_ttl.as_millis() as u64;
    for (i, chunk) in changes.chunks(PIPELINE_CHUNK / 3).enumerate() {
        let mut pipe = redis::pipe();
        for &(family_id, user_id, present) in chunk {
            let key = family_key(family_id);
            let member = entry(user_id, &shared.instance);
            if present {
                pipe.cmd("SADD").arg(&key).arg(&member).ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
            } else {
                pipe.cmd("SREM").arg(&key).arg(&member).ignore();
            }
            pipe.cmd("PUBLISH")
                .arg(channel(family_id))
                .arg(presence_payload(shared, user_id, present))
                .ignore();
        }
        if let Err(err) = query::<()>(&shared.conn, COMMAND_TIMEOUT, pipeline(&pipe)).await {
            // Written again at the next heartbeat or when Redis is back.
            let mut presence = shared.presence();
            for &(family_id, user_id, _) in &changes[i * (PIPELINE_CHUNK / 3)..] {
                presence.dirty.insert((family_id, user_id));
            }
            return Err(err);
        }
        shared
            .metrics
            .cluster
            .published
            .fetch_add(chunk.len() as u64, Relaxed);
    }
    Ok(())
}

/// Refreshes the heartbeat and writes every entry of this node again. Each member is also
/// published as present when `announce` (after a failure) or when the heartbeat key was gone
/// (the first beat, a Redis that restarted empty, or a beat so late that other nodes' sweeps may
/// have removed this node's entries): other nodes then ask `present` again.
async fn heartbeat_and_register(shared: &Shared, announce: bool) -> Result<(), ClusterError> {
    flush(shared).await?;
    let ttl = shared.settings.node_ttl.as_millis() as u64;
    let key = node_key(&shared.instance);
    // SET .. GET (Redis 6.2 and later) answers the value before: none if the key had expired.
    let before: Option<String> = query(&shared.conn, COMMAND_TIMEOUT, move |mut conn| {
        let key = key.clone();
        Box::pin(async move {
            redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("PX")
                .arg(ttl)
                .arg("GET")
                .query_async(&mut conn)
                .await
        })
    })
    .await?;
    let announce = announce || before.is_none();
    let members: Vec<(i64, Vec<i64>)> = shared
        .presence()
        .members
        .iter()
        .map(|(&family_id, users)| (family_id, users.keys().copied().collect()))
        .collect();
    let mut pipe = redis::pipe();
    let mut commands = 0;
    let mut announced = 0;
    for (family_id, users) in members {
        let key = family_key(family_id);
        let entries: Vec<String> = users.iter().map(|&u| entry(u, &shared.instance)).collect();
        pipe.cmd("SADD").arg(&key).arg(entries).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        commands += 2;
        if announce {
            for &user_id in &users {
                pipe.cmd("PUBLISH")
                    .arg(channel(family_id))
                    .arg(presence_payload(shared, user_id, true))
                    .ignore();
                commands += 1;
                announced += 1;
            }
        }
        if commands >= PIPELINE_CHUNK {
            query::<()>(&shared.conn, COMMAND_TIMEOUT, pipeline(&pipe)).await?;
            pipe = redis::pipe();
            commands = 0;
        }
    }
    if commands > 0 {
        query::<()>(&shared.conn, COMMAND_TIMEOUT, pipeline(&pipe)).await?;
    }
    shared
        .metrics
        .cluster
        .published
        .fetch_add(announced, Relaxed);
    Ok(())
}

/// Which of these instances have a live heartbeat.
async fn alive(
    shared: &Shared,
    instances: &HashSet<String>,
) -> Result<HashSet<String>, ClusterError> {
    let mut live = HashSet::new();
    let instances: Vec<&String> = instances.iter().collect();
    for chunk in instances.chunks(PIPELINE_CHUNK) {
        let mut pipe = redis::pipe();
        for instance in chunk {
            pipe.cmd("EXISTS").arg(node_key(instance));
        }
        let exists: Vec<bool> = query(&shared.conn, COMMAND_TIMEOUT, pipeline(&pipe)).await?;
        live.extend(
            chunk
                .iter()
                .zip(exists)
                .filter(|(_, exists)| *exists)
                .map(|(instance, _)| (*instance).clone()),
        );
    }
    Ok(live)
}

/// The family's members present on other instances (live heartbeat), from Redis.
pub(super) async fn remote_present(
    shared: Arc<Shared>,
    family_id: i64,
) -> Result<HashSet<i64>, ClusterError> {
    let entries: Vec<String> = query(&shared.conn, COMMAND_TIMEOUT, move |mut conn| {
        Box::pin(async move {
            redis::cmd("SMEMBERS")
                .arg(family_key(family_id))
                .query_async(&mut conn)
                .await
        })
    })
    .await?;
    let others: Vec<(i64, &str)> = entries
        .iter()
        .filter_map(|e| parse_entry(e))
        .filter(|(_, instance)| *instance != shared.instance)
        .collect();
    if others.is_empty() {
        return Ok(HashSet::new());
    }
    let instances = others.iter().map(|(_, i)| (*i).to_owned()).collect();
    let live = alive(&shared, &instances).await?;
    Ok(others
        .into_iter()
        .filter(|(_, instance)| live.contains(*instance))
        .map(|(user, _)| user)
        .collect())
}

/// Removes the entries of dead instances from the families this node hosts (has subscribers
/// for). For each member whose entry this node removed and who is present nowhere else, the
/// family's local subscribers get `Presence { present: false }` and it is published.
async fn sweep(shared: &Shared) -> Result<(), ClusterError> {
    let families: Vec<i64> = shared.subscribers().families.keys().copied().collect();
    for chunk in families.chunks(PIPELINE_CHUNK) {
        let mut pipe = redis::pipe();
        for &family_id in chunk {
            pipe.cmd("SMEMBERS").arg(family_key(family_id));
        }
        let sets: Vec<Vec<String>> = query(&shared.conn, COMMAND_TIMEOUT, pipeline(&pipe)).await?;
        let instances: HashSet<String> = sets
            .iter()
            .flatten()
            .filter_map(|e| parse_entry(e))
            .filter(|(_, instance)| *instance != shared.instance)
            .map(|(_, instance)| instance.to_owned())
            .collect();
        if instances.is_empty() {
            continue;
        }
        let live = alive(shared, &instances).await?;
        // family -> members still present on a live instance (this one included).
        let mut still: HashMap<i64, HashSet<i64>> = HashMap::new();
        let mut dead: Vec<(i64, i64, &String)> = Vec::new();
        for (&family_id, entries) in chunk.iter().zip(&sets) {
            for e in entries {
                let Some((user_id, instance)) = parse_entry(e) else {
                    continue;
                };
                if instance == shared.instance || live.contains(instance) {
                    still.entry(family_id).or_default().insert(user_id);
                } else {
                    dead.push((family_id, user_id, e));
                }
            }
        }
        if dead.is_empty() {
            continue;
        }
        // Checked again and removed in one step: a heartbeat that comes back between the look
        // above and the removal keeps its entries (and one after it announces them again).
        let mut pipe = redis::pipe();
        for (family_id, _, e) in &dead {
            let instance = parse_entry(e).map_or("", |(_, instance)| instance);
            pipe.cmd("EVAL")
                .arg(REMOVE_IF_DEAD)
                .arg(2)
                .arg(family_key(*family_id))
                .arg(node_key(instance))
                .arg(*e);
        }
        let removed: Vec<i64> = query(&shared.conn, COMMAND_TIMEOUT, pipeline(&pipe)).await?;
        let mut gone = HashSet::new();
        for ((family_id, user_id, _), removed) in dead.into_iter().zip(removed) {
            let local = shared
                .presence()
                .members
                .get(&family_id)
                .is_some_and(|users| users.contains_key(&user_id));
            let elsewhere = still
                .get(&family_id)
                .is_some_and(|users| users.contains(&user_id));
            // Only the node whose SREM removed the entry tells: the others hear it published.
            if removed == 1 && !local && !elsewhere && gone.insert((family_id, user_id)) {
                let event = ClusterEvent::Presence {
                    user_id,
                    present: false,
                };
                log::info!(
                    "cluster: member {user_id} of family {family_id} was on a dead node; gone"
                );
                shared.deliver(family_id, Remote::Event(event.clone()));
                shared.publish(family_id, event);
            }
        }
    }
    Ok(())
}

/// A clean stop: the heartbeat and every entry of this instance removed, each member announced
/// as gone; the presence task stops.
pub(super) async fn unregister(shared: &Shared) -> Result<(), ClusterError> {
    shared.halted.store(true, Relaxed);
    let members: Vec<(i64, i64)> = {
        let mut presence = shared.presence();
        presence.dirty.clear();
        std::mem::take(&mut presence.members)
            .into_iter()
            .flat_map(|(family_id, users)| users.into_keys().map(move |u| (family_id, u)))
            .collect()
    };
    let mut pipe = redis::pipe();
    pipe.cmd("DEL").arg(node_key(&shared.instance)).ignore();
    for &(family_id, user_id) in &members {
        pipe.cmd("SREM")
            .arg(family_key(family_id))
            .arg(entry(user_id, &shared.instance))
            .ignore();
        pipe.cmd("PUBLISH")
            .arg(channel(family_id))
            .arg(presence_payload(shared, user_id, false))
            .ignore();
    }
    query::<()>(&shared.conn, COMMAND_TIMEOUT, pipeline(&pipe)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_user_and_instance() {
        assert_eq!(entry(12, "a~0f"), "12@a~0f");
        assert_eq!(parse_entry("12@a~0f"), Some((12, "a~0f")));
        assert_eq!(parse_entry("x@a"), None);
        assert_eq!(parse_entry("12"), None);
        assert_eq!(node_key("a~0f"), "podo:node:a~0f");
        assert_eq!(family_key(3), "podo:p:3");
    }
}
