//! Family chat over WebSocket: the ChatRoom actor per family (sessions, presence, seq, group
//! commit), the WS session actor per connection, frames, and history reads.
pub mod error;
pub mod frames;
pub mod messages;
pub mod room;
pub mod session;
pub mod store;

pub use messages::CloseRoom;
pub use room::{ChatDeps, ChatRoom};
pub use session::WsSession;

/// Family id → ChatRoom.
pub type ChatRegistry = crate::registry::Registry<ChatRoom>;
