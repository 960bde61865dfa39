//! The fan-out seam: where a family's actor (FamilyBoard, ChatRoom) hands what it committed.
//!
//! A [`Fanout`] holds the family's local sessions (as [`Recipient`]s, so the actor never names a
//! session type) and, in cluster mode, a [`Bus`] to the other nodes. The actor calls
//! [`Fanout::committed`] once per committed event: every local session gets the frame, and the
//! bus gets the event for the other nodes' sessions. What arrives from another node is handed to
//! the local sessions only ([`Fanout::local`]). On one node there is no bus, and a committed event
//! reaches exactly the local sessions. (Presence does not pass here: a room tells the cluster who is
//! in it, `Cluster::join` / `Cluster::leave`, and the cluster announces it.)
use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;

/// What a family's actor committed, as the other nodes need to hear of it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The board moved to `version`; `state` is the family's state at that version (JSON of
    /// `board::Loaded`), which a node one version behind takes as is, while any other reloads
    /// from the database.
    Board { version: i64, state: Option<String> },
    /// A chat message was stored with `seq`; `frame` is its `message` frame, as sent to clients.
    /// The sender and client id let the other nodes ack a resend of it without a database read.
    Message {
        seq: i64,
        sender_id: i64,
        client_id: String,
        frame: ByteString,
    },
}

/// Carries committed events to the other nodes. Publishing never waits: an event that cannot be
/// carried is dropped, and the receivers catch up from the database (the source of truth).
pub trait Bus: Send + Sync + 'static {
    fn publish(&self, family_id: i64, event: Event);
}

/// A family's local sessions, keyed by session id, and the bus to the other nodes (if any).
pub struct Fanout<M>
where
    M: Message<Result = ()> + Send + Clone,
{
    family_id: i64,
    sessions: HashMap<u64, Recipient<M>>,
    bus: Option<Arc<dyn Bus>>,
}

impl<M> Fanout<M>
where
    M: Message<Result = ()> + Send + Clone + 'static,
{
    pub fn new(family_id: i64, bus: Option<Arc<dyn Bus>>) -> Self {
        Fanout {
            family_id,
            sessions: HashMap::new(),
            bus,
        }
    }

    pub fn add(&mut self, session_id: u64, session: Recipient<M>) {
        self.sessions.insert(session_id, session);
    }

    pub fn remove(&mut self, session_id: u64) {
        self.sessions.remove(&session_id);
    }

    /// One session, for what answers it alone.
    pub fn get(&self, session_id: u64) -> Option<&Recipient<M>> {
        self.sessions.get(&session_id)
    }

    /// Forgets sessions whose actor stopped.
    pub fn prune(&mut self) {
        self.sessions.retain(|_, session| session.connected());
        if self.sessions.is_empty() {
            self.sessions = HashMap::new();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// A committed event: `frame` to every local session, `event` to the other nodes.
    pub fn committed(&self, event: Event, frame: M) {
        self.local(frame);
        if let Some(bus) = &self.bus {
            bus.publish(self.family_id, event);
        }
    }

    /// `event` to the other nodes only (no local session needs the frame).
    pub fn publish_only(&self, event: Event) {
        if let Some(bus) = &self.bus {
            bus.publish(self.family_id, event);
        }
    }

    /// `frame` to every local session only (what came from another node, or concerns only
    /// this node's sessions).
    pub fn local(&self, frame: M) {
        for session in self.sessions.values() {
            session.do_send(frame.clone());
        }
    }

    /// Takes every session out (shutdown).
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, Recipient<M>)> + '_ {
        self.sessions.drain()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Message, Clone)]
    #[rtype(result = "()")]
    struct Frame(u32);

    struct Sink(Arc<Mutex<Vec<u32>>>);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Frame> for Sink {
        type Result = ();
        fn handle(&mut self, Frame(n): Frame, _: &mut Context<Self>) {
            self.0.lock().expect("lock").push(n);
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(i64, Event)>>);
    impl Bus for Recorder {
        fn publish(&self, family_id: i64, event: Event) {
            self.0.lock().expect("lock").push((family_id, event));
        }
    }

    #[actix::test]
    async fn committed_reaches_local_sessions_and_the_bus_local_only_the_sessions() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(got.clone()).start();
        let bus = Arc::new(Recorder::default());
        let mut fanout = Fanout::new(7, Some(bus.clone() as Arc<dyn Bus>));
        fanout.add(1, sink.clone().recipient());
        fanout.committed(
            Event::Board {
                version: 3,
                state: None,
            },
            Frame(3),
        );
        fanout.local(Frame(4));
        // A message sent after the frames is handled after them.
        sink.send(Frame(0)).await.expect("sink runs");
        assert_eq!(*got.lock().expect("lock"), vec![3, 4, 0]);
        assert_eq!(
            *bus.0.lock().expect("lock"),
            vec![(
                7,
                Event::Board {
                    version: 3,
                    state: None
                }
            )]
        );
    }
}
