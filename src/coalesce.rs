//! One run at a time, and one more after it when asked meanwhile: how an actor reloads after
//! events that may come faster than a database or Redis read (a board catching up, a room
//! filling a gap or asking who is in it elsewhere).
#[derive(Debug, Default)]
pub struct Coalesce {
    running: bool,
    again: bool,
}

impl Coalesce {
    /// True if the caller may start a run now; false if one runs (it is noted to run again).
    pub fn start(&mut self) -> bool {
        if self.running {
            self.again = true;
            return false;
        }
        self.running = true;
        true
    }

    /// The run ended; true if another was asked for while it ran.
    pub fn finish(&mut self) -> bool {
        self.running = false;
        std::mem::take(&mut self.again)
    }
}

#[cfg(test)]
mod tests {
    use super::Coalesce;

    #[test]
    fn asks_during_a_run_make_one_more_run() {
        let mut c = Coalesce::default();
        assert!(c.start());
        assert!(!c.start());
        assert!(!c.start());
        assert!(c.finish());
        assert!(c.start());
        assert!(!c.finish());
    }
}
