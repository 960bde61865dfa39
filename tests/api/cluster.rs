//! Two nodes, one family: node A and node B are two servers on one PostgreSQL database and one
//! Redis (cluster mode), the parent connected to A and the child to B. They must behave like one
//! server: the board live both ways, chat in one gapless order with resume and resends on either
//! node, presence both ways, push only to a member in the room on neither node (and never to a
//! subscription removed on the other node), a node killed with SIGKILL whose members leave the
//! room within 30 s, and a Redis that restarts mid-chat loses nothing a client was acknowledged.
//!
//! Needs PostgreSQL (`PODO_TEST_PG`, as `.ci/run` sets): cluster mode refuses SQLite, so on the
//! SQLite run these tests note that they were skipped. Each test starts a `redis-server` of its
//! own (tests/support/redis.rs): Redis pub/sub channels are global, not per database index, so two
//! tests on one Redis would hear each other's families.
use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, TestApp, WsClient, error_code, spawn_app_with, ws_at};
use crate::push_service::{PushService, SUBJECT, Subscriber};
use crate::redis_server::RedisServer;

const WAIT: Duration = Duration::from_secs(10);

struct TwoNodes {
    a: TestApp,
    b: TestApp,
    redis: RedisServer,
}

/// Nodes A and B on one fresh PostgreSQL database and a Redis of the test's own; `None` (with a
/// note) without `PODO_TEST_PG`.
async fn two_nodes(push: Option<&PushService>) -> Option<TwoNodes> {
    if std::env::var("PODO_TEST_PG").map_or(true, |url| url.is_empty()) {
        eprintln!("skipped: cluster mode needs PostgreSQL; set PODO_TEST_PG");
        return None;
    }
    let redis = RedisServer::start().await;
    let ca_file = push.map(|service| service.ca_file.clone());
    let node = |name: &'static str, database: Option<String>| {
        let (redis_url, ca_file) = (redis.url(0), ca_file.clone());
        move |c: &mut podo::Config| {
            if let Some(url) = database {
                c.database_url = Some(url);
            }
            c.redis_url = Some(redis_url);
            c.node_id = Some(name.into());
            if let Some(ca_file) = ca_file {
                c.vapid_subject = SUBJECT.into();
                c.push_allow_private = true;
                c.push_ca_file = Some(ca_file);
            }
        }
    };
    let a = spawn_app_with(node("a", None)).await;
    let b = spawn_app_with(node("b", Some(a.config.database_url()))).await;
    Some(TwoNodes { a, b, redis })
}

/// A node as an operator runs it: the `podo` binary in cluster mode, so that it can be killed
/// with SIGKILL (killed on drop too).
struct NodeProcess {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    /// `podo serve` on an ephemeral port, on `database_url` and `redis_url`, with the tests'
    /// JWT secret (tokens minted by the other nodes work); waits for its "listening" line.
    fn start(database_url: &str, redis_url: &str, node_id: &str) -> NodeProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = crate::podo_process::serve_command(dir.path());
        command
            .env("DATABASE_URL", database_url)
            .env("PODO_REDIS_URL", redis_url)
            .env("PODO_NODE_ID", node_id)
            .env("PODO_JWT_SECRET", JWT_SECRET);
        let (child, address) = crate::podo_process::spawn_listening(command);
        NodeProcess {
            child,
            base: format!("http://{address}"),
            _dir: dir,
        }
    }

    /// SIGKILL: no goodbye, its presence entries stay in Redis until its heartbeat expires.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Frames until one of `kind` satisfies `want`, within [`WAIT`].
async fn expect_where(ws: &mut WsClient, kind: &str, want: impl Fn(&Value) -> bool) -> Value {
    expect_within(ws, kind, WAIT, want).await
}

/// Frames until one of `kind` satisfies `want`, within `wait`.
async fn expect_within(
    ws: &mut WsClient,
    kind: &str,
    wait: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next_frame(left).await {
            Ok(Some(frame)) if frame["type"] == kind && want(&frame) => return frame,
            Ok(Some(_)) => continue,
            other => panic!("expected a matching {kind} frame, got {other:?}"),
        }
    }
}

/// The `message` frames' (seq, client id) until `n` arrived (other frames skipped).
async fn messages(ws: &mut WsClient, n: usize) -> Vec<(i64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = ws.expect("message", WAIT).await;
        got.push((
            frame["seq"].as_i64().expect("seq"),
            frame["client_id"].as_str().expect("client id").to_owned(),
        ));
    }
    got
}

fn present(frame: &Value) -> BTreeSet<i64> {
    frame["present"]
        .as_array()
        .expect("present")
        .iter()
        .filter_map(Value::as_i64)
        .collect()
}

#[actix_web::test]
async fn the_board_is_live_both_ways_across_nodes() {
    let Some(nodes) = two_nodes(None).await else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let fam = a.family("cl_board").await;
    let mut parent_stream = a.sse(&fam.parent.token).await;
    let mut child_stream = b.sse(&fam.child.token).await;
    assert_eq!(
        parent_stream.next_board(WAIT).await.map(|(v, _)| v),
        Some(0)
    );
    assert_eq!(child_stream.next_board(WAIT).await.map(|(v, _)| v), Some(0));

    // The parent opens the board and grants on A; the child sees each on B.
    let wish_id = b.wish(&fam.child, "자전거").await;
    let (status, board) = a
        .post("/api/board", &fam.parent.token, json!({"wish_id": wish_id}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{board}");
    let (version, seen) = child_stream.next_board(WAIT).await.expect("board on B");
    assert_eq!((version, seen["board"]["size"].as_i64()), (1, Some(31)));
    a.post("/api/board/grant", &fam.parent.token, json!({"count": 3}))
        .await;
    let (version, seen) = child_stream.next_board(WAIT).await.expect("grant on B");
    assert_eq!((version, seen["board"]["granted"].as_i64()), (2, Some(3)));

    // The child attaches on B; the parent sees it on A, in version order.
    for _ in 0..2 {
        let (status, body) = b
            .request("POST", "/api/board/attach", Some(&fam.child.token), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let versions = parent_stream.versions_until(4, WAIT).await;
    assert_eq!(versions.last(), Some(&4), "A's stream: {versions:?}");
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(a.board(&fam.parent.token).await["attached"], 2);
    assert_eq!(b.board(&fam.child.token).await["attached"], 2);
}

#[actix_web::test]
async fn parallel_grants_on_two_nodes_fill_the_board_exactly() {
    let Some(nodes) = two_nodes(None).await else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let fam = a.family("cl_grants").await;
    a.open_board(&fam, 31).await;
    let grants = (0..50).map(|i| {
        let node = if i % 2 == 0 { a } else { b };
        node.post("/api/board/grant", &fam.parent.token, json!({"count": 1}))
    });
    let answers = join_all(grants).await;
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    // Refused: the board is full, or (a grant beaten by the other node's changes five times in a
    // row, rare) it kept changing; never more than 31 granted.
    let refused = answers
        .iter()
        .filter(|(s, body)| {
            *s == StatusCode::CONFLICT && ["board_full", "conflict"].contains(&error_code(body))
        })
        .count();
    assert_eq!((ok, refused), (31, 19), "{answers:?}");
    for node in [a, b] {
        let board = node.board(&fam.child.token).await;
        assert_eq!(board["granted"], 31);
        assert_eq!(board["version"], 32);
    }
}

/// A node that has not heard of the other's change (Redis down) must not refuse from its stale
/// memory: the parent grants on A, the child on B attaches at once and gets the grape, because B
/// checks a refusal ("nothing to attach") against the database before answering it.
#[actix_web::test]
async fn a_refusal_is_checked_against_the_database_on_a_node_that_missed_a_change() {
    let Some(mut nodes) = two_nodes(None).await else {
        return;
    };
    let fam = nodes.a.family("cl_refusal").await;
    nodes.a.open_board(&fam, 31).await;
    // B holds the board in memory (version 1, nothing granted) while the child watches there.
    let mut child_stream = nodes.b.sse(&fam.child.token).await;
    assert_eq!(child_stream.next_board(WAIT).await.map(|(v, _)| v), Some(1));
    nodes.redis.stop();
    let (status, body) = nodes
        .a
        .post("/api/board/grant", &fam.parent.token, json!({"count": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = nodes
        .b
        .request("POST", "/api/board/attach", Some(&fam.child.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "B judged from stale memory: {body}");
    assert_eq!(
        (body["granted"].as_i64(), body["attached"].as_i64()),
        (Some(2), Some(1))
    );
    // A refusal that holds stays one: two granted, both attached, a third has nothing.
    nodes
        .b
        .request("POST", "/api/board/attach", Some(&fam.child.token), None)
        .await;
    let (status, body) = nodes
        .b
        .request("POST", "/api/board/attach", Some(&fam.child.token), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "nothing_to_attach");
}

/// Both members send at once, one on each node: both see every message once, in one gapless
/// order; a resume on either node replays it; a resend on the other node is acked with the
/// original seq.
#[actix_web::test]
async fn chat_is_one_gapless_order_across_nodes() {
    let Some(nodes) = two_nodes(None).await else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let fam = a.family("cl_chat").await;
    let (mut parent, _) = a.ws(&fam.parent.token).await;
    let (mut child, _) = b.ws(&fam.child.token).await;
    const EACH: usize = 40;
    for i in 0..EACH {
        parent
            .send_message(&format!("p{i}"), &format!("from A {i}"))
            .await;
        child
            .send_message(&format!("c{i}"), &format!("from B {i}"))
            .await;
    }
    let on_a = messages(&mut parent, 2 * EACH).await;
    let on_b = messages(&mut child, 2 * EACH).await;
    assert_eq!(on_a, on_b, "both nodes deliver one order");
    let seqs: Vec<i64> = on_a.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=(2 * EACH) as i64).collect::<Vec<_>>());
    let ids: BTreeSet<&str> = on_a.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 2 * EACH, "every message once");
    // Each member's own messages in the order sent.
    for prefix in ["p", "c"] {
        let own: Vec<&str> = on_a
            .iter()
            .map(|(_, id)| id.as_str())
            .filter(|id| id.starts_with(prefix))
            .collect();
        let sent: Vec<String> = (0..EACH).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(own, sent);
    }

    // A resend of the parent's first message, to B, is acked with its seq and stored once.
    let (mut parent_on_b, _) = b.ws(&fam.parent.token).await;
    parent_on_b.send_message("p0", "from A 0").await;
    let ack = parent_on_b.expect("ack", WAIT).await;
    let original = on_a.iter().find(|(_, id)| id == "p0").map(|(seq, _)| *seq);
    assert_eq!(ack["seq"].as_i64(), original);

    // A resume on either node replays the whole order.
    for node in [a, b] {
        let (mut again, hello) = node.ws(&fam.child.token).await;
        assert_eq!(hello["last_seq"], 2 * EACH as i64);
        again
            .send_json(json!({"type": "resume", "after_seq": 0}))
            .await;
        assert_eq!(messages(&mut again, 2 * EACH).await, on_a);
        again.expect("resumed", WAIT).await;
    }
}

/// Push rule across nodes: the parent on A messages the child; while the child is in the room
/// on B no push goes out, once the child left B it does.
#[actix_web::test]
async fn presence_spans_nodes_and_push_goes_only_to_the_absent() {
    let service = PushService::start().await;
    let Some(nodes) = two_nodes(Some(&service)).await else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let fam = a.family("cl_presence").await;
    let (_, key) = a.request("GET", "/api/push/public-key", None, None).await;
    service.require_vapid_key(key["public_key"].as_str().expect("key"));
    let phone = Subscriber::new(&service.base, "child-phone");
    let (status, body) = b
        .post("/api/push/subscriptions", &fam.child.token, phone.json())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (mut parent, hello) = a.ws(&fam.parent.token).await;
    assert_eq!(present(&hello), BTreeSet::from([fam.parent.id]));
    let (mut child, hello) = b.ws(&fam.child.token).await;
    assert_eq!(
        present(&hello),
        BTreeSet::from([fam.parent.id, fam.child.id]),
        "B's hello names the parent on A"
    );
    expect_where(&mut parent, "presence", |f| {
        f["user_id"] == fam.child.id && f["present"] == true
    })
    .await;

    // In the room on B: no push for the parent's message on A.
    parent.send_message("m1", "보고 있니?").await;
    parent.expect("ack", WAIT).await;
    child.expect("message", WAIT).await;
    // The child hides the tab on B: out of the room.
    child
        .send_json(json!({"type": "visibility", "visible": false}))
        .await;
    expect_where(&mut parent, "presence", |f| {
        f["user_id"] == fam.child.id && f["present"] == false
    })
    .await;
    parent.send_message("m2", "어디 갔어?").await;
    parent.expect("ack", WAIT).await;
    let got = service.wait_for("child-phone", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let body = phone.open(
        &got[0],
        key["public_key"].as_str().expect("key"),
        &service.base,
    );
    assert_eq!(body["body"], "어디 갔어?", "the push is the second message");

    // The parent leaves A: the child on B sees it.
    drop(parent);
    expect_where(&mut child, "presence", |f| {
        f["user_id"] == fam.parent.id && f["present"] == false
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(service.received("child-phone").len(), 1, "one push only");
}

/// Push targets are read from memory per user; a subscription removed (or added) through node B
/// must not be missed by node A, which pushes the parent's messages: A never pushes to the
/// endpoint removed on B, and pushes to the one added there.
#[actix_web::test]
async fn push_targets_changed_on_one_node_are_used_by_the_other() {
    let service = PushService::start().await;
    let Some(nodes) = two_nodes(Some(&service)).await else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let fam = a.family("cl_targets").await;
    let (_, key) = a.request("GET", "/api/push/public-key", None, None).await;
    service.require_vapid_key(key["public_key"].as_str().expect("key"));
    let phone = Subscriber::new(&service.base, "old-phone");
    let (status, body) = b
        .post("/api/push/subscriptions", &fam.child.token, phone.json())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The child is not in the room: A pushes the parent's message, reading the child's targets.
    let (mut parent, _) = a.ws(&fam.parent.token).await;
    parent.send_message("m1", "첫 번째").await;
    parent.expect("ack", WAIT).await;
    assert_eq!(service.wait_for("old-phone", 1, WAIT).await.len(), 1);

    // On B the child swaps the old phone for a new one.
    let heard = a.metric("podo_cluster_received_total").await;
    let (status, body) = b
        .request(
            "DELETE",
            "/api/push/subscriptions",
            Some(&fam.child.token),
            Some(json!({"endpoint": phone.endpoint})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let new_phone = Subscriber::new(&service.base, "new-phone");
    let (status, body) = b
        .post(
            "/api/push/subscriptions",
            &fam.child.token,
            new_phone.json(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A has heard both notices (nothing else crosses from B: the child is in no room there).
    let deadline = Instant::now() + WAIT;
    while a.metric("podo_cluster_received_total").await < heard + 2.0 {
        assert!(Instant::now() < deadline, "A never heard of the change");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    parent.send_message("m2", "두 번째").await;
    parent.expect("ack", WAIT).await;
    let got = service.wait_for("new-phone", 1, WAIT).await;
    assert_eq!(got.len(), 1, "A pushes to the phone added on B");
    let body = new_phone.open(
        &got[0],
        key["public_key"].as_str().expect("key"),
        &service.base,
    );
    assert_eq!(body["body"], "두 번째");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        service.received("old-phone").len(),
        1,
        "nothing for the removed phone"
    );
}

/// A node killed with SIGKILL says no goodbye: its members' presence entries stay in Redis until
/// its heartbeat expires. The parent is on the killed node, the child on B: within 30 s the child
/// sees the parent leave, and a new session's hello no longer names the parent.
#[actix_web::test]
async fn a_node_killed_with_sigkill_loses_its_members_within_30_seconds() {
    let Some(nodes) = two_nodes(None).await else {
        return;
    };
    let b = &nodes.b;
    let mut doomed = NodeProcess::start(&b.config.database_url(), &nodes.redis.url(0), "doomed");
    let fam = b.family("cl_killed").await;
    let (_parent, hello) = ws_at(&b.client, &doomed.base, &fam.parent.token).await;
    assert_eq!(present(&hello), BTreeSet::from([fam.parent.id]));
    let (mut child, hello) = b.ws(&fam.child.token).await;
    assert_eq!(
        present(&hello),
        BTreeSet::from([fam.parent.id, fam.child.id]),
        "B's hello names the parent on the other node"
    );

    doomed.kill();
    let killed_at = Instant::now();
    expect_within(&mut child, "presence", Duration::from_secs(40), |f| {
        f["user_id"] == fam.parent.id && f["present"] == false
    })
    .await;
    let took = killed_at.elapsed();
    eprintln!("the killed node's member left after {took:?}");
    assert!(took <= Duration::from_secs(30), "took {took:?}");
    let (_again, hello) = b.ws(&fam.child.token).await;
    assert_eq!(present(&hello), BTreeSet::from([fam.child.id]));
}

/// Redis is killed mid-chat and comes back empty: each node keeps serving its own sessions, and
/// when Redis is back the other node's sessions catch up from the database, in order, with
/// nothing missing; the board stream on B gets the state committed on A meanwhile.
#[actix_web::test]
async fn a_redis_restart_mid_chat_loses_nothing_acknowledged() {
    let Some(mut nodes) = two_nodes(None).await else {
        return;
    };
    let fam = nodes.a.family("cl_redis").await;
    nodes.a.open_board(&fam, 31).await;
    let (mut parent, _) = nodes.a.ws(&fam.parent.token).await;
    let (mut child, _) = nodes.b.ws(&fam.child.token).await;
    let mut child_stream = nodes.b.sse(&fam.child.token).await;
    assert_eq!(child_stream.next_board(WAIT).await.map(|(v, _)| v), Some(1));
    parent.send_message("before", "1").await;
    assert_eq!(messages(&mut child, 1).await, vec![(1, "before".into())]);

    nodes.redis.stop();
    // While Redis is down, A acks and stores; its own sessions see everything.
    for i in 0..5 {
        parent.send_message(&format!("down{i}"), "…").await;
        parent.expect("ack", WAIT).await;
    }
    let (status, body) = nodes
        .a
        .post("/api/board/grant", &fam.parent.token, json!({"count": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    nodes.redis.restart().await;
    let caught_up = messages(&mut child, 5).await;
    let expected: Vec<(i64, String)> = (0..5).map(|i| (i + 2, format!("down{i}"))).collect();
    assert_eq!(caught_up, expected);
    let (version, board) = child_stream.next_board(WAIT * 2).await.expect("state on B");
    assert_eq!((version, board["board"]["granted"].as_i64()), (2, Some(2)));

    // Delivery across nodes works again.
    parent.send_message("after", "2").await;
    assert_eq!(messages(&mut child, 1).await, vec![(7, "after".into())]);
}
