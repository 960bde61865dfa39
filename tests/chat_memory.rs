//! Server memory under a client that floods pings and never reads, in a test binary of its own:
//! the server runs in this process, and here no other test shares it, so its RSS is the server's.
#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/raw_ws.rs"]
mod raw_ws;

use raw_ws::MIB;

#[actix_web::test]
async fn a_ping_flood_from_a_client_that_never_reads_leaves_memory_bounded() {
    let app = helpers::spawn_app().await;
    let flood = raw_ws::flood_with_pings(&app, "mem_ping").await;
    let [before, at_close, after] = flood.rss.map(|b| b as f64 / MIB);
    eprintln!(
        "closed after {:?} of {} pings; RSS {before:.1} → {at_close:.1} MiB at the close → {after:.1} MiB after 50,000 more",
        flood.closed_after, flood.sent
    );
    assert!(flood.closed_after.is_some(), "never closed");
    // Up to the close: the 1 MiB budget, the socket's and actix's buffers, allocator slack.
    assert!(
        at_close - before < 12.0,
        "{:.1} MiB until the close",
        at_close - before
    );
    // After it nothing is queued for the client: more pings are read and dropped.
    assert!(
        after - at_close < 4.0,
        "{:.1} MiB after the close",
        after - at_close
    );
    assert_eq!(flood.close_code, Some(1013));
}
