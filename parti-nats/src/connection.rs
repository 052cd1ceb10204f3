//! Connection state transitions, queued per reader.
//!
//! [`KvStore::connection`](parti_core::store::KvStore::connection) promises that consecutive
//! items differ and that a disconnect is reported. A `tokio::sync::watch` keeps only the latest
//! value: a reader that was busy during a short disconnect then sees `Connected` again (a
//! repeated state) or nothing at all, and a watch that waits for "connected after disconnected"
//! misses the reconnect after which the server may have lost its history. Here every reader has
//! its own queue: it gets the state current when it subscribed, then every transition after it,
//! however late it reads.
//!
//! A queue grows only by one item per transition while its reader does not read (transitions
//! are connects and disconnects: a handful per outage); a reader that is dropped is forgotten
//! at the next transition.

use std::sync::{Mutex, PoisonError};

use parti_core::store::ConnectionState;
use tokio::sync::mpsc;

/// The current connection state and every reader's queue.
#[derive(Debug)]
pub(crate) struct ConnectionHub {
    state: Mutex<HubState>,
}

#[derive(Debug)]
struct HubState {
    current: ConnectionState,
    readers: Vec<mpsc::UnboundedSender<ConnectionState>>,
}

impl ConnectionHub {
    pub(crate) fn new(initial: ConnectionState) -> ConnectionHub {
        ConnectionHub {
            state: Mutex::new(HubState {
                current: initial,
                readers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A poisoned lock only means a thread panicked between two plain assignments; the
        // state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state now.
    pub(crate) fn current(&self) -> ConnectionState {
        self.lock().current
    }

    /// Records `next`; if it differs from the current state, queues the transition for every
    /// reader. Returns whether it was a transition.
    pub(crate) fn set(&self, next: ConnectionState) -> bool {
        let mut state = self.lock();
        if state.current == next {
            return false;
        }
        state.current = next;
        state.readers.retain(|reader| reader.send(next).is_ok());
        true
    }

    /// A short disconnect seen only afterwards (a reconnect counter went up while the state
    /// read `Connected` both times): both transitions are queued, so no reader misses it.
    pub(crate) fn bounce(&self) {
        self.set(ConnectionState::Disconnected);
        self.set(ConnectionState::Connected);
    }

    /// A new reader: the current state first, then every transition.
    pub(crate) fn subscribe(&self) -> Transitions {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        // Under the lock: no transition can fall between the first item and the queue.
        let _ = tx.send(state.current);
        state.readers.push(tx);
        Transitions { rx }
    }
}

/// One reader's queue of connection states.
#[derive(Debug)]
pub(crate) struct Transitions {
    rx: mpsc::UnboundedReceiver<ConnectionState>,
}

impl Transitions {
    /// The next state (the first call returns the state at subscription); `None` once the
    /// store is gone.
    pub(crate) async fn next(&mut self) -> Option<ConnectionState> {
        self.rx.recv().await
    }

    /// The next state if one is queued.
    pub(crate) fn try_next(&mut self) -> Option<ConnectionState> {
        self.rx.try_recv().ok()
    }

    /// Into a stream, for [`KvStore::connection`](parti_core::store::KvStore::connection).
    pub(crate) fn into_stream(self) -> impl futures::Stream<Item = ConnectionState> {
        futures::stream::unfold(self, |mut t| async move {
            let state = t.next().await?;
            Some((state, t))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionState::{Connected, Disconnected};

    fn drain(t: &mut Transitions) -> Vec<ConnectionState> {
        let mut out = Vec::new();
        while let Some(state) = t.try_next() {
            out.push(state);
        }
        out
    }

    /// The defect this module exists for: a reader that did not read during a short disconnect
    /// still gets both transitions, and never the same state twice in a row.
    #[test]
    fn a_late_reader_gets_every_transition_once() {
        let hub = ConnectionHub::new(Connected);
        let mut late = hub.subscribe();
        assert!(hub.set(Disconnected));
        assert!(!hub.set(Disconnected));
        assert!(hub.set(Connected));
        hub.bounce();
        assert_eq!(
            drain(&mut late),
            vec![Connected, Disconnected, Connected, Disconnected, Connected]
        );
        let mut fresh = hub.subscribe();
        assert_eq!(drain(&mut fresh), vec![Connected]);
    }

    #[test]
    fn dropped_readers_are_forgotten() {
        let hub = ConnectionHub::new(Disconnected);
        drop(hub.subscribe());
        hub.set(Connected);
        assert!(hub.lock().readers.is_empty());
    }
}
